//! A minimal HTTP/1.1 client over one keep-alive TCP connection: exactly what
//! the load generator needs (POST with a body in several parts, a response
//! with a Content-Length or chunked body, reconnect after `Connection: close`
//! or an I/O error), and nothing that costs time per request.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response; `body` is reused between requests to avoid reallocating large
/// buffers.
#[derive(Default)]
pub struct Response {
    pub status: u16,
    /// `Inference-Header-Content-Length`, if the server sent it.
    pub inference_header_len: Option<usize>,
    pub body: Vec<u8>,
}

pub struct Connection {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// Bytes read from the socket but not consumed yet: `buf[pos..end]`.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    head: Vec<u8>,
}

const READ_CHUNK: usize = 64 * 1024;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Connection {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Connection {
            addr,
            host: addr.to_string(),
            timeout,
            stream: None,
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            head: Vec::with_capacity(512),
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            self.pos = 0;
            self.end = 0;
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("connected above"))
    }

    /// Forgets the connection (the next request reconnects).
    pub fn reset(&mut self) {
        self.stream = None;
        self.pos = 0;
        self.end = 0;
    }

    /// POSTs `parts` (concatenated) as the body and reads the response into
    /// `resp`. On an error the connection is reset.
    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        parts: &[&[u8]],
        resp: &mut Response,
    ) -> io::Result<()> {
        let r = self.post_inner(path, headers, parts, resp);
        if r.is_err() {
            self.reset();
        }
        r
    }

    fn post_inner(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        parts: &[&[u8]],
        resp: &mut Response,
    ) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        write!(
            head,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\n",
            self.host
        )?;
        for (k, v) in headers {
            write!(head, "{k}: {v}\r\n")?;
        }
        head.extend_from_slice(b"\r\n");
        // Small requests go out in one write (one segment with TCP_NODELAY).
        let small = len <= 16 * 1024;
        if small {
            for p in parts {
                head.extend_from_slice(p);
            }
        }
        let stream = self.stream()?;
        let written = stream.write_all(&head);
        let written = written.and_then(|_| {
            if !small {
                for p in parts {
                    stream.write_all(p)?;
                }
            }
            Ok(())
        });
        self.head = head;
        written?;
        self.read_response(resp)
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let end = self.end;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| invalid("not connected"))?;
        let n = stream.read(&mut self.buf[end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        self.end += n;
        Ok(())
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf[self.pos..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.end - self.pos > 64 * 1024 {
                return Err(invalid("HTTP header line too long"));
            }
            self.fill()?;
        }
    }

    /// Appends exactly `n` body bytes to `out`.
    fn read_exact_into(&mut self, out: &mut Vec<u8>, n: usize) -> io::Result<()> {
        let buffered = (self.end - self.pos).min(n);
        out.extend_from_slice(&self.buf[self.pos..self.pos + buffered]);
        self.pos += buffered;
        let rest = n - buffered;
        if rest > 0 {
            let start = out.len();
            out.resize(start + rest, 0);
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| invalid("not connected"))?;
            stream.read_exact(&mut out[start..])?;
        }
        Ok(())
    }

    fn read_response(&mut self, resp: &mut Response) -> io::Result<()> {
        let status_line = self.read_line()?;
        let mut it = status_line.splitn(3, ' ');
        let version = it.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        resp.status = it
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        resp.inference_header_len = None;
        resp.body.clear();
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = version == "HTTP/1.0";
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    v.parse()
                        .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?,
                );
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                let v = v.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            } else if k.eq_ignore_ascii_case("inference-header-content-length") {
                resp.inference_header_len =
                    Some(v.parse().map_err(|_| {
                        invalid(format!("bad Inference-Header-Content-Length {v:?}"))
                    })?);
            }
        }
        let mut body = std::mem::take(&mut resp.body);
        let read = if chunked {
            self.read_chunked(&mut body)
        } else if let Some(n) = content_length {
            self.read_exact_into(&mut body, n)
        } else {
            Err(invalid(
                "response has neither Content-Length nor chunked encoding",
            ))
        };
        resp.body = body;
        read?;
        if close {
            self.reset();
        }
        Ok(())
    }

    fn read_chunked(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let n = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
            if n == 0 {
                // Trailers, then the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(());
            }
            self.read_exact_into(out, n)?;
            if !self.read_line()?.is_empty() {
                return Err(invalid("missing CRLF after a chunk"));
            }
        }
    }
}

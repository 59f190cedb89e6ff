//! Just enough HTTP/1.0 to poll tritonserver on loopback: no TLS, no
//! keep-alive, no chunked encoding (HTTP/1.0 responses never use it).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Context as _};

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    // One write: Triton's HTTP server (evhtp) can misroute a request whose
    // head arrives split over several TCP segments.
    stream.write_all(&request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response (no header end)")?;
    let head = std::str::from_utf8(&raw[..split]).context("malformed HTTP response head")?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("malformed HTTP status line `{status_line}`");
    };
    if !version.starts_with("HTTP/") {
        bail!("malformed HTTP status line `{status_line}`");
    }
    let status = code
        .parse()
        .with_context(|| format!("malformed HTTP status `{code}`"))?;
    Ok(Response {
        status,
        body: raw[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"[]");
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"FTP 200\r\n\r\n").is_err());
    }
}

//! Framing: each message is a little-endian `u32` body length, then the
//! body, the message as JSON. Reading a frame allocates in proportion to the
//! bytes that arrived, never to what the length field claims: a worker runs
//! user code and its frames are untrusted (design hazard 15).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::{FromWorker, ToWorker};

/// Frames larger than this are a protocol error (tensors travel in shared
/// memory; only inline BLS tensors and late decoupled responses ride in
/// frames).
pub const MAX_FRAME: usize = 256 << 20;
/// The length field before each body.
const HEADER: usize = 4;
/// The most a frame's body buffer starts with; it grows as bytes arrive.
const INITIAL_BODY: usize = 64 << 10;

/// Why bytes from the other side are not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("control channel: {0}")]
    Io(#[from] io::Error),
    #[error("a control frame of {0} bytes (at most {MAX_FRAME} are allowed)")]
    TooLarge(usize),
    #[error("a control frame announced {expected} bytes but holds {got}")]
    BadLength { expected: usize, got: usize },
    #[error("a malformed control message: {0}")]
    Malformed(String),
    #[error("a tensor at {offset}+{len} lies outside the {region} of {size} bytes")]
    OutOfRange {
        region: &'static str,
        offset: usize,
        len: usize,
        size: usize,
    },
    #[error(
        "tensors of {total} bytes in all claimed in the {region} of {size} bytes (they overlap)"
    )]
    Overlap {
        region: &'static str,
        total: usize,
        size: usize,
    },
    #[error("unknown data type '{0}'")]
    UnknownDtype(String),
    #[error("tensor '{name}': {why}")]
    BadTensor { name: String, why: String },
    #[error("a control frame stopped after {got} of {expected} bytes (nothing more came for a whole timeout)")]
    Stalled { expected: usize, got: usize },
}

/// A whole frame: length field and body.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut frame = vec![0u8; HEADER];
    serde_json::to_writer(&mut frame, msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    let body = frame.len() - HEADER;
    if body > MAX_FRAME {
        return Err(WireError::TooLarge(body));
    }
    frame[..HEADER].copy_from_slice(&(body as u32).to_le_bytes());
    Ok(frame)
}

/// Writes one frame (unflushed: a buffered writer may hold it).
pub fn write_frame<T: Serialize, W: Write>(w: &mut W, msg: &T) -> io::Result<()> {
    let frame = encode_frame(msg).map_err(io::Error::other)?;
    w.write_all(&frame)
}

/// Reads one frame; `Ok(None)` at the end of the stream (also in the middle
/// of a length field: the peer is gone either way).
pub fn read_frame<T: for<'de> Deserialize<'de>, R: Read>(
    r: &mut R,
) -> Result<Option<T>, WireError> {
    let mut header = [0u8; HEADER];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let expected = body_len(header)?;
    let mut body = Vec::with_capacity(expected.min(INITIAL_BODY));
    r.by_ref().take(expected as u64).read_to_end(&mut body)?;
    if body.len() != expected {
        return Err(WireError::BadLength {
            expected,
            got: body.len(),
        });
    }
    decode_body(&body).map(Some)
}

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 64 << 10;
/// A buffer that grew past this for a large frame is freed once empty.
const KEEP_BUFFER: usize = 1 << 20;

/// Reads frames from a stream whose reads time out (the backend sets
/// `SO_RCVTIMEO` on a worker's socket): a timeout between two frames is an
/// idle worker, and the read is simply retried; a timeout in the middle of
/// one means the worker sent part of a frame and then nothing for a whole
/// timeout, which no worker following the protocol does (it writes each
/// frame whole, under a lock): [`WireError::Stalled`]. So a half frame
/// never holds the reader for longer than one timeout. The buffer holds
/// only bytes that arrived (plus one read's room), never what a length
/// field claims.
pub struct FrameStream<R> {
    inner: R,
    /// Bytes read and not yet handed out, from `pos`.
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> FrameStream<R> {
    pub fn new(inner: R) -> FrameStream<R> {
        FrameStream {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads until `want` bytes are buffered. `Ok(false)`: the stream ended
    /// first. A timeout counts as a stall only once part of the frame is
    /// here (`started`, or bytes buffered).
    fn fill(&mut self, want: usize, started: bool) -> Result<bool, WireError> {
        while self.buffered() < want {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + READ_CHUNK, 0);
            let read = self.inner.read(&mut self.buf[have..]);
            self.buf.truncate(have + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if started || self.buffered() > 0 {
                        return Err(WireError::Stalled {
                            expected: want,
                            got: self.buffered(),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// The next frame; `Ok(None)` when the stream ends between frames.
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, WireError> {
        if !self.fill(HEADER, false)? {
            return match self.buffered() {
                0 => Ok(None),
                got => Err(WireError::BadLength {
                    expected: HEADER,
                    got,
                }),
            };
        }
        let header: [u8; HEADER] = self.buf[self.pos..self.pos + HEADER]
            .try_into()
            .unwrap_or_default();
        let expected = body_len(header)?;
        if !self.fill(HEADER + expected, true)? {
            return Err(WireError::BadLength {
                expected,
                got: self.buffered() - HEADER,
            });
        }
        let body = &self.buf[self.pos + HEADER..self.pos + HEADER + expected];
        let msg = decode_body(body);
        self.pos += HEADER + expected;
        if self.pos == self.buf.len() && self.buf.capacity() > KEEP_BUFFER {
            // A large frame passed: its buffer goes with it.
            self.buf = Vec::new();
            self.pos = 0;
        }
        msg.map(Some)
    }

    /// Bytes the buffer holds (for tests of the allocation bound).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Decodes one whole frame the worker sent (length field and body, nothing
/// after it). Pure: never panics, allocates at most in proportion to
/// `frame.len()`. A fuzz target's entry point (issue 25).
pub fn decode_from_worker(frame: &[u8]) -> Result<FromWorker, WireError> {
    decode_frame(frame)
}

/// Decodes one whole frame the backend sent (as [`decode_from_worker`]).
pub fn decode_to_worker(frame: &[u8]) -> Result<ToWorker, WireError> {
    decode_frame(frame)
}

fn decode_frame<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, WireError> {
    let Some((header, body)) = frame.split_first_chunk::<HEADER>() else {
        return Err(WireError::BadLength {
            expected: HEADER,
            got: frame.len(),
        });
    };
    let expected = body_len(*header)?;
    if body.len() != expected {
        return Err(WireError::BadLength {
            expected,
            got: body.len(),
        });
    }
    decode_body(body)
}

fn body_len(header: [u8; HEADER]) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

/// A message's JSON body. serde_json bounds its recursion, so no input can
/// exhaust the stack, and no field of ours is pre-sized from the input.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn frames_round_trip_and_the_stream_ends_cleanly() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToWorker::Shutdown).unwrap();
        write_frame(&mut buf, &FromWorker::Finish { request: 7 }).unwrap();
        let mut r = io::Cursor::new(buf);
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(ToWorker::Shutdown)
        ));
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(FromWorker::Finish { request: 7 })
        ));
        assert!(read_frame::<ToWorker, _>(&mut r).unwrap().is_none());
    }

    #[test]
    fn a_length_field_over_the_limit_is_refused_before_reading_the_body() {
        let mut r = io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
        assert!(matches!(
            read_frame::<ToWorker, _>(&mut r),
            Err(WireError::TooLarge(_))
        ));
        assert!(matches!(
            decode_from_worker(&u32::MAX.to_le_bytes()),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_message() {
        let full = encode_frame(&FromWorker::Ready { is_ready: false }).unwrap();
        for cut in 0..full.len() {
            assert!(
                decode_from_worker(&full[..cut]).is_err(),
                "cut at {cut} decoded"
            );
        }
        // On a stream: a body cut short by the end of the stream.
        let mut r = io::Cursor::new(full[..full.len() - 1].to_vec());
        assert!(matches!(
            read_frame::<FromWorker, _>(&mut r),
            Err(WireError::BadLength { .. })
        ));
    }

    #[test]
    fn a_huge_announced_length_with_a_short_body_fails_without_allocating_it() {
        // 200 MiB announced, 5 bytes sent: the body buffer stays small.
        let mut bytes = (200u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"\"Rea");
        let mut r = io::Cursor::new(bytes);
        match read_frame::<FromWorker, _>(&mut r) {
            Err(WireError::BadLength { expected, got }) => {
                assert_eq!((expected, got), (200 << 20, 4));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bytes_after_the_body_and_bodies_that_are_not_messages_are_refused() {
        let mut long = encode_frame(&FromWorker::Ready { is_ready: false }).unwrap();
        long.push(b' ');
        assert!(matches!(
            decode_from_worker(&long),
            Err(WireError::BadLength { .. })
        ));
        for body in [
            &b""[..],
            b"{",
            b"\"NoSuchMessage\"",
            b"{\"Finish\":{\"request\":-1}}",
            b"{\"Done\":{\"ok\":\"yes\"}}",
            &[0xff, 0xfe],
        ] {
            assert!(
                matches!(
                    decode_from_worker(&frame_of(body)),
                    Err(WireError::Malformed(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        // An unknown field is skipped, recursively: serde_json bounds that.
        let body = format!(
            "{{\"Finish\":{{\"request\":1,\"x\":{}}}}}",
            "[".repeat(100_000)
        );
        assert!(matches!(
            decode_from_worker(&frame_of(body.as_bytes())),
            Err(WireError::Malformed(_))
        ));
    }
}

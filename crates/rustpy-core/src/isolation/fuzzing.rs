//! The backend's side of a worker's control channel with no worker process,
//! for the fuzz targets (`fuzz/`) and the bounded proptests: bytes as a
//! worker could send them go through the reader thread's own framing
//! ([`FrameStream`]), checks and routing (reader.rs `Routes`), on real
//! regions (small fixed memfds) and a real socket pair (what the backend
//! writes back is drained). Every frame that gets through is checked
//! against what the backend may hand Triton: no response larger than the
//! regions, no BLS inputs larger than the BLS region.
//!
//! Not an API: public only so that the fuzz crate can call it.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use super::bls::{BackendBls, BlsRegion};
use super::guard::WorkerGuard;
use super::reader::{Routes, EXECUTE_FRAMES};
use super::ready::ReadyLink;
use super::response::{OpenRequests, ResponseReader};
use super::rpc::{bls_inputs, CallServer};
use super::transport::{Channel, RegionSizes, Regions};
use super::wire::{decode_body, decode_from_worker, FrameStream, FromWorker, WireBlsRequest};
use crate::engine::{OutputSlice, Responder};
use crate::error::{Error, Result};

/// The size of each region of the harness.
pub const REGION: usize = 64 << 10;
/// Requests per batch the harness opens.
const BATCH: usize = 4;

/// What feeding the backend did.
#[derive(Debug, Default)]
pub struct Report {
    /// Frames read and handled.
    pub frames: usize,
    /// Why the backend would kill the worker, if it would.
    pub breach: Option<String>,
    /// Responses delivered to requests.
    pub delivered: usize,
}

/// A responder that checks what reaches it.
struct Checked(bool);

impl Responder for Checked {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        let bytes: usize = outputs.iter().map(|o| o.data.len()).sum();
        // The output region once, views of the input region their bound.
        let most = REGION + super::wire::ALIASED_PER_INPUT * REGION;
        assert!(
            bytes <= most,
            "a response of {bytes} bytes reached Triton from regions of {REGION}"
        );
        self.0 = !is_final;
        Ok(())
    }
    fn send_error(&mut self, _: &Error) {
        self.0 = false;
    }
    fn finish(&mut self) {
        self.0 = false;
    }
    fn is_open(&self) -> bool {
        self.0
    }
}

/// A stream of chunks as a socket with a receive timeout delivers them:
/// `None` is a read that timed out.
struct Chunks(VecDeque<Option<Vec<u8>>>);

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.pop_front() {
            None => Ok(0),
            Some(None) => Err(io::ErrorKind::WouldBlock.into()),
            Some(Some(mut chunk)) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(Some(chunk.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

/// Splits `stream` into chunks by `schedule`: each schedule byte is one
/// chunk of `1 + byte % 64` bytes, preceded by a timeout when its top bit
/// is set; after the schedule, the rest is one chunk.
fn chunked(schedule: &[u8], stream: &[u8]) -> Chunks {
    let mut chunks = VecDeque::new();
    let mut rest = stream;
    for &b in schedule {
        if rest.is_empty() {
            break;
        }
        if b & 0x80 != 0 {
            chunks.push_back(None);
        }
        let n = (1 + usize::from(b % 64)).min(rest.len());
        chunks.push_back(Some(rest[..n].to_vec()));
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        chunks.push_back(Some(rest.to_vec()));
    }
    Chunks(chunks)
}

/// One worker's backend side, without the worker.
pub struct Backend {
    routes: Routes,
    execute: Receiver<FromWorker>,
    open: Arc<OpenRequests>,
    /// The worker's end of the socket: what the backend writes lands here.
    peer: UnixStream,
    bls: BackendBls,
    bls_writer: BlsRegion,
    /// The batch running now, as the execute thread would have sent it.
    batch: u64,
    delivered: usize,
}

impl Backend {
    /// A backend whose worker has answered nothing yet, with batches 1 to
    /// 3 sent (4 requests each, batch 3 running).
    pub fn new() -> io::Result<Backend> {
        let sizes = RegionSizes {
            input: REGION,
            shared: REGION,
        };
        let regions = Regions::create(sizes)?;
        let (ours, peer) = UnixStream::pair()?;
        peer.set_nonblocking(true)?;
        let guard = WorkerGuard::detached("fuzzing".into(), &ours)?;
        let writer = Channel::new(ours, guard)?;
        let open = Arc::new(OpenRequests::default());
        let Regions {
            input_view,
            output,
            bls_in,
            bls_out,
            ..
        } = regions;
        // The BLS regions as a BLS call's thread reads them, and the
        // worker's end of the input one.
        let bls = BackendBls::new(bls_in.try_clone()?, bls_out.try_clone()?);
        let bls_writer = bls_in.try_clone()?;
        let responses = ResponseReader::new(open.clone(), output, input_view, writer.clone());
        let ready = ReadyLink::new(writer.clone());
        let calls = CallServer::new(writer, bls_in, bls_out, 4, "fuzzing".into());
        let (tx, execute) = mpsc::sync_channel(EXECUTE_FRAMES);
        let mut backend = Backend {
            routes: Routes::new(responses, calls, ready, tx, String::new()),
            execute,
            open,
            peer,
            bls,
            bls_writer,
            batch: 0,
            delivered: 0,
        };
        for _ in 0..3 {
            backend.next_batch();
        }
        Ok(backend)
    }

    /// The execute thread sends the next batch.
    fn next_batch(&mut self) {
        self.batch += 1;
        let responders = (0..BATCH).map(|_| Checked(true)).collect();
        self.open.open_batch(self.batch, responders);
        self.open.set_running(self.batch);
    }

    /// After a frame: the execute thread takes what it waits for (after a
    /// Done it sends the next batch), and the worker's end is drained so
    /// the backend's writes never block.
    fn settle(&mut self) {
        while let Ok(frame) = self.execute.try_recv() {
            if matches!(frame, FromWorker::Done(_)) {
                self.next_batch();
            }
        }
        let mut sink = [0u8; 4096];
        while matches!((&self.peer).read(&mut sink), Ok(n) if n > 0) {}
    }

    fn route(&mut self, msg: FromWorker, report: &mut Report) -> bool {
        report.frames += 1;
        if matches!(msg, FromWorker::Response(_) | FromWorker::InlineResponse(_)) {
            self.delivered += 1;
        }
        let routed = self.routes.route(msg);
        self.settle();
        match routed {
            Ok(go_on) => go_on,
            Err(why) => {
                report.breach = Some(why);
                false
            }
        }
    }

    /// Feeds `stream` as the reader thread reads it, in chunks and with
    /// read timeouts placed by `schedule` (see [`chunked`]), until the
    /// stream ends or the worker would be killed.
    pub fn feed_stream(&mut self, schedule: &[u8], stream: &[u8]) -> Report {
        let mut report = Report::default();
        let mut frames = FrameStream::new(chunked(schedule, stream));
        loop {
            match frames.next_frame::<FromWorker>() {
                Ok(Some(msg)) => {
                    if !self.route(msg, &mut report) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    report.breach = Some(format!("it sent {e}"));
                    break;
                }
            }
        }
        // The buffer held what arrived, plus one read.
        assert!(
            frames.capacity() <= 2 * (stream.len() + (64 << 10)),
            "the frame buffer grew to {} bytes for {} bytes sent",
            frames.capacity(),
            stream.len()
        );
        report.delivered = self.delivered;
        report
    }

    /// Feeds one whole frame (length field and body).
    pub fn feed_frame(&mut self, frame: &[u8]) -> Report {
        let mut report = Report::default();
        match decode_from_worker(frame) {
            Ok(msg) => {
                self.route(msg, &mut report);
            }
            Err(e) => report.breach = Some(format!("it sent {e}")),
        }
        report.delivered = self.delivered;
        report
    }

    /// Writes `bytes` into the worker's BLS input region at `offset` (as the
    /// worker would before a call), within the region.
    pub fn write_bls_input(&self, offset: usize, bytes: &[u8]) {
        let end = offset.saturating_add(bytes.len()).min(REGION);
        if offset < end {
            let _ = self.bls_writer.write_at(offset, &bytes[..end - offset]);
        }
    }

    /// The backend's reading of a BLS request's inputs (`body`: the JSON of
    /// a `WireBlsRequest`), inline or from the BLS input region. Returns
    /// the bytes read, or the error the call is answered with.
    pub fn bls_request(&self, body: &[u8]) -> std::result::Result<usize, String> {
        let mut req: WireBlsRequest = decode_body(body).map_err(|e| e.to_string())?;
        let (held, _read) = crossbeam::channel::bounded::<()>(0);
        let inputs = bls_inputs(&self.bls, &mut req, &held)?;
        let bytes: usize = inputs.iter().map(|t| t.data.len()).sum();
        if req.shared.is_some() {
            assert!(
                bytes <= REGION,
                "BLS inputs of {bytes} bytes read from a region of {REGION}"
            );
        }
        Ok(bytes)
    }
}

/// Frames a worker following the protocol could send the harness: the
/// seeds of the fuzz corpus (fuzz/corpus, written by `write_seed_corpus`)
/// and the raw material of the proptests.
pub fn sample_frames() -> Vec<(&'static str, Vec<u8>)> {
    use super::wire::{
        encode_frame, request_id, Done, InlineResponse, Response, ServerOp, WireShared, WireTensor,
    };
    let t = |name: &str, dtype: &str, shape: Vec<i64>, offset, len| WireTensor {
        name: name.into(),
        dtype: dtype.into(),
        shape,
        offset,
        len,
    };
    let out = OutputSlice::host(
        "OUT",
        crate::DataType::Fp32,
        vec![2],
        &[0, 0, 128, 63, 0, 0, 0, 64],
    );
    let frames = [
        ("ready", FromWorker::Ready { is_ready: true }),
        (
            "response",
            FromWorker::Response(Response {
                request: request_id(3, 1),
                outputs: vec![
                    t("OUT", "FP32", vec![2, 2], 0, 16),
                    t("IN", "UINT8", vec![8], 64, 8),
                ],
                output_len: REGION,
                is_final: true,
                from_input: vec![1],
                taken: Some(1),
                parameters: vec![],
            }),
        ),
        (
            "inline",
            FromWorker::InlineResponse(
                InlineResponse::new(request_id(2, 0), &[out], &[], false).expect("host outputs"),
            ),
        ),
        (
            "error",
            FromWorker::Error {
                request: request_id(1, 3),
                code: 3,
                message: "ValueError: no".into(),
                is_final: true,
            },
        ),
        (
            "finish",
            FromWorker::Finish {
                request: request_id(2, 2),
            },
        ),
        ("done", FromWorker::Done(Done::failed(BATCH, vec![1]))),
        (
            "log",
            FromWorker::Log {
                level: 1,
                file: "model.py".into(),
                line: 3,
                message: "hello".into(),
            },
        ),
        (
            "call",
            FromWorker::Call {
                call: 1,
                op: ServerOp::IsModelReady {
                    name: "m".into(),
                    version: -1,
                },
            },
        ),
        (
            "release",
            FromWorker::BlsRelease {
                starts: vec![0, 64],
            },
        ),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = frames
        .into_iter()
        .map(|(name, f)| (name, encode_frame(&f).expect("a sample frame")))
        .collect();
    // A BLS call whose inputs lie in the BLS input region.
    let shared = FromWorker::Call {
        call: 2,
        op: ServerOp::Infer {
            stream: 3,
            request: WireBlsRequest {
                model_name: "m".into(),
                model_version: -1,
                request_id: String::new(),
                correlation_id: super::wire::WireCorrelation::None,
                flags: 0,
                timeout_us: 0,
                inputs: vec![],
                requested_outputs: vec!["OUT".into()],
                parameters: vec![],
                shared: Some(WireShared {
                    start: 0,
                    tensors: vec![t("X", "UINT8", vec![4096], 0, 4096)],
                }),
            },
        },
    };
    out.push(("bls_call", encode_frame(&shared).expect("a sample frame")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    fn sample(name: &str) -> Vec<u8> {
        sample_frames()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }

    const CONVERSATION: [&str; 9] = [
        "ready", "log", "response", "inline", "error", "finish", "call", "release", "done",
    ];

    /// The samples, as a worker following the protocol sends them.
    fn conversation() -> Vec<u8> {
        CONVERSATION.iter().flat_map(|n| sample(n)).collect()
    }

    /// A schedule for [`conversation`] with a timeout before every frame
    /// (an idle worker between frames) and each frame in small reads.
    fn idle_between_frames() -> Vec<u8> {
        let mut schedule = Vec::new();
        for name in CONVERSATION {
            let mut left = sample(name).len();
            let mut first = true;
            while left > 0 {
                let n = left.min(64);
                schedule.push((n - 1) as u8 | if first { 0x80 } else { 0 });
                first = false;
                left -= n;
            }
        }
        schedule
    }

    #[test]
    fn a_conversation_that_follows_the_protocol_goes_through() {
        let stream = conversation();
        let mut b = Backend::new().unwrap();
        let r = b.feed_stream(&[], &stream);
        assert_eq!(r.breach, None);
        assert_eq!((r.frames, r.delivered), (9, 2));
        // In small reads with a timeout between frames (an idle worker).
        let r = Backend::new()
            .unwrap()
            .feed_stream(&idle_between_frames(), &stream);
        assert_eq!(r.breach, None);
        assert_eq!(r.frames, 9);
    }

    #[test]
    fn what_no_worker_following_the_protocol_sends_is_a_breach() {
        let ready = sample("ready");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage!".to_vec(), "control frame of"),
            (frame_of(b"{\"Ready\""), "malformed"),
            (u32::MAX.to_le_bytes().to_vec(), "at most"),
            (
                [ready.clone(), ready.clone()].concat(),
                "second first answer",
            ),
            (sample("done"), "no batch was running"),
            (
                [sample("finish"), sample("finish")].concat(),
                "never given or had already answered",
            ),
            (
                frame_of(b"{\"Finish\":{\"request\":99}}"),
                "request 99 of batch 0",
            ),
        ];
        for (stream, needle) in cases {
            let r = Backend::new().unwrap().feed_stream(&[], &stream);
            let why = r.breach.unwrap_or_default();
            assert!(why.contains(needle), "{needle:?} not in {why:?}");
        }
    }

    #[test]
    fn a_half_frame_is_given_up_after_one_timeout_and_a_hang_up_mid_frame_is_an_error() {
        let frame = sample("response");
        let half = &frame[..frame.len() / 2];
        // Half a frame, then a timeout: stalled, not waited for.
        let mut b = Backend::new().unwrap();
        let mut schedule = vec![0u8; half.len()];
        schedule.push(0x80);
        let r = b.feed_stream(&schedule, &[half, &frame[half.len()..]].concat());
        let why = r.breach.unwrap();
        assert!(why.contains("stopped after"), "{why}");
        // Half a frame, then the end of the stream.
        let r = Backend::new().unwrap().feed_stream(&[], half);
        assert!(r.breach.unwrap().contains("holds"));
        // A timeout between frames is an idle worker; in one, a stall.
        let r = Backend::new()
            .unwrap()
            .feed_stream(&idle_between_frames(), &conversation());
        assert_eq!(r.breach, None);
        let r = Backend::new()
            .unwrap()
            .feed_stream(&[0x80 | 63; 64], &conversation());
        assert!(r.breach.unwrap().contains("stopped after"));
    }

    #[test]
    fn bls_inputs_are_read_only_from_within_the_region_and_at_most_its_size() {
        let b = Backend::new().unwrap();
        b.write_bls_input(0, &[7u8; 4096]);
        let body = |tensors: &str| {
            format!(
                "{{\"model_name\":\"m\",\"model_version\":-1,\"request_id\":\"\",\"correlation_id\":\"None\",\"flags\":0,\"timeout_us\":0,\"inputs\":[],\"requested_outputs\":[],\"parameters\":[],\"shared\":{{\"start\":0,\"tensors\":[{tensors}]}}}}"
            )
        };
        let t = |offset: usize, len: usize| {
            format!("{{\"name\":\"X\",\"dtype\":\"UINT8\",\"shape\":[{len}],\"offset\":{offset},\"len\":{len}}}")
        };
        assert_eq!(b.bls_request(body(&t(0, 4096)).as_bytes()), Ok(4096));
        let region_twice = format!("{},{}", t(0, REGION), t(0, REGION));
        for (tensors, needle) in [
            (t(REGION, 1), "outside"),
            (t(usize::MAX, 2), "outside"),
            (region_twice, "overlap"),
            (
                "{\"name\":\"X\",\"dtype\":\"FP32\",\"shape\":[3],\"offset\":0,\"len\":8}"
                    .to_string(),
                "needs 12 bytes",
            ),
        ] {
            let err = b.bls_request(body(&tensors).as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    /// Writes the seeds of the fuzz corpus (fuzz/corpus/<target>/seed-*):
    /// `cargo test -p rustpy-core write_seed_corpus -- --ignored`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        };
        for (name, frame) in sample_frames() {
            write("frame", name, &frame[4..]);
            write("stream", name, &[[0u8].as_slice(), &frame].concat());
        }
        write(
            "stream",
            "conversation",
            &[[0u8].as_slice(), &conversation()].concat(),
        );
        let mut idle = vec![idle_between_frames().len().min(31) as u8];
        idle.extend(idle_between_frames().iter().take(31));
        idle.extend(conversation());
        write("stream", "idle", &idle);
        let bls_call = sample("bls_call");
        let body = String::from_utf8(bls_call[4..].to_vec()).unwrap();
        let request = &body[body.find("\"request\":").unwrap() + 10..body.len() - 4];
        write("bls", "shared", request.as_bytes());
        let inline = request.replace(
            "\"inputs\":[]",
            "\"inputs\":[{\"name\":\"S\",\"dtype\":\"BYTES\",\"shape\":[1],\"data\":[1,0,0,0,120]}]",
        ).replace("\"shared\":{\"start\":0,\"tensors\":[{\"name\":\"X\",\"dtype\":\"UINT8\",\"shape\":[4096],\"offset\":0,\"len\":4096}]}", "\"shared\":null");
        write("bls", "inline", inline.as_bytes());
        // The seeds are what they say.
        let b = Backend::new().unwrap();
        assert_eq!(b.bls_request(request.as_bytes()), Ok(4096));
        assert_eq!(b.bls_request(inline.as_bytes()), Ok(5));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes, in any chunks, with timeouts anywhere: the backend
        /// reads them, decides, and never panics or over-allocates (the
        /// harness's checks).
        #[test]
        fn any_bytes_in_any_chunks_are_handled(
            schedule in prop::collection::vec(any::<u8>(), 0..32),
            stream in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = Backend::new().unwrap().feed_stream(&schedule, &stream);
        }

        /// How the bytes are cut into reads changes nothing (timeouts
        /// between frames only: the top bit is cleared).
        #[test]
        fn chunking_changes_nothing(schedule in prop::collection::vec(0u8..128, 0..64)) {
            let stream = conversation();
            let whole = Backend::new().unwrap().feed_stream(&[], &stream);
            let cut = Backend::new().unwrap().feed_stream(&schedule, &stream);
            prop_assert_eq!((whole.frames, whole.delivered, whole.breach), (cut.frames, cut.delivered, cut.breach));
        }

        /// The samples with one byte changed: never a panic, and a frame
        /// whose length field still fits is decoded or refused.
        #[test]
        fn samples_with_a_byte_changed_are_handled(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut stream = conversation();
            let i = at.index(stream.len());
            stream[i] = byte;
            let _ = Backend::new().unwrap().feed_stream(&[], &stream);
        }

        /// Responses in shared memory with any places and shapes: delivered
        /// only when inside the regions and consistent (the harness's
        /// responders check the size of what they get).
        #[test]
        fn any_placed_response_is_delivered_or_refused(
            outputs in prop::collection::vec(
                (any::<bool>(), 0usize..(2 * REGION), 0usize..(2 * REGION), 0i64..40_000, 0usize..3),
                0..6,
            ),
            index in 0usize..6,
        ) {
            let tensors: Vec<String> = outputs.iter().map(|(_, offset, len, dim, dtype)| format!(
                "{{\"name\":\"O\",\"dtype\":\"{}\",\"shape\":[{dim}],\"offset\":{offset},\"len\":{len}}}",
                ["UINT8", "FP32", "BYTES"][*dtype]
            )).collect();
            let from_input: Vec<String> = outputs.iter().enumerate()
                .filter(|(_, o)| o.0).map(|(k, _)| k.to_string()).collect();
            let body = format!(
                "{{\"Response\":{{\"request\":{},\"outputs\":[{}],\"output_len\":0,\"is_final\":true,\"from_input\":[{}]}}}}",
                (3usize << 24) | index, tensors.join(","), from_input.join(",")
            );
            let mut b = Backend::new().unwrap();
            let r = b.feed_stream(&[], &[sample("ready"), frame_of(body.as_bytes())].concat());
            if index >= BATCH {
                prop_assert!(r.breach.is_some());
            }
            if r.breach.is_none() {
                prop_assert_eq!(r.delivered, 1);
            }
        }
    }
}

//! The transport between the backend and one worker: the control socket's
//! halves and the memfd regions (inputs, outputs, BLS). What travels on it
//! is in [`super::wire`]; who may write where in a region is decided by the
//! exchange using it (response.rs, instance.rs, bls.rs).

use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use super::bls::BlsRegion;
use super::guard::WorkerGuard;
use super::sys::{fixed_memfd, Shm};
use super::wire::{encode_frame, FromWorker, ToWorker, WireError};
use crate::error::{Error, ErrorCode, Result};

/// Pinned ranges start on page boundaries (a batch placed after one).
const PAGE: usize = 4096;
/// How long the backend waits for a worker to take (or finish sending) a
/// frame: a worker that reads nothing of what the backend sends for this
/// long while the socket buffer is full, or stops in the middle of a frame
/// it sends, has stopped following the protocol and is killed.
pub(super) const STALL: Duration = Duration::from_secs(10);

// ---- The backend's end. ----

/// The backend's sending half of a worker's control socket (the execute
/// thread, the reader thread and the threads answering server calls share
/// it). A write that cannot go out within [`STALL`] trips the worker's
/// guard: the frame may be half written, the stream is lost.
pub(super) struct Channel {
    stream: Mutex<UnixStream>,
    guard: Arc<WorkerGuard>,
}

pub(super) type Writer = Arc<Channel>;

impl Channel {
    /// `stream` gets [`STALL`] as its send timeout (and its receive
    /// timeout: the socket is shared with the reader thread, which waits
    /// out idle periods, see wire::FrameStream).
    pub(super) fn new(stream: UnixStream, guard: Arc<WorkerGuard>) -> std::io::Result<Writer> {
        stream.set_write_timeout(Some(STALL))?;
        stream.set_read_timeout(Some(STALL))?;
        Ok(Arc::new(Channel {
            stream: Mutex::new(stream),
            guard,
        }))
    }

    pub(super) fn guard(&self) -> &Arc<WorkerGuard> {
        &self.guard
    }
}

pub(super) fn write_to(w: &Writer, msg: &ToWorker) -> std::io::Result<()> {
    let frame = encode_frame(msg).map_err(std::io::Error::other)?;
    let mut s = w.stream.lock().unwrap_or_else(|p| p.into_inner());
    let sent = s.write_all(&frame);
    drop(s);
    if let Err(e) = &sent {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            w.guard.broke(format!(
                "it read nothing of its control channel for {} s",
                STALL.as_secs()
            ));
        }
    }
    sent
}

/// How large each of a worker's shared regions is (bytes); every one is a
/// [`fixed_memfd`], so these are also the most memory each can hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct RegionSizes {
    pub(super) input: usize,
    /// The output region and each BLS region.
    pub(super) shared: usize,
}

/// The regions the backend creates for one worker, before it starts.
pub(super) struct Regions {
    /// Inputs: the backend writes, the worker maps and reads.
    pub(super) input: InputRegion,
    /// The reader thread's own mapping of the input region, for outputs
    /// that are views of the inputs.
    pub(super) input_view: Shm,
    /// Outputs: the worker writes, the backend's reader thread reads.
    pub(super) output: Shm,
    /// The input and output memfds again, for the memory they hold
    /// (metrics).
    pub(super) region_files: [std::fs::File; 2],
    /// BLS tensors (isolation/bls.rs).
    pub(super) bls_in: BlsRegion,
    pub(super) bls_out: BlsRegion,
    /// The fds the worker inherits, in the order of its arguments:
    /// input, output, bls-in, bls-out.
    pub(super) child_fds: [RawFd; 4],
}

impl Regions {
    /// Regions of `sizes` (sparse: pages cost memory once written).
    pub(super) fn create(sizes: RegionSizes) -> std::io::Result<Regions> {
        let input_fd = fixed_memfd("rustpy-input", sizes.input)?;
        let input_view = Shm::map(input_fd.try_clone()?)?;
        let input_fd_copy = input_fd.try_clone()?;
        let input = Shm::map(input_fd)?;
        let output_fd = fixed_memfd("rustpy-output", sizes.shared)?;
        let region_files = [
            std::fs::File::from(input_fd_copy),
            std::fs::File::from(output_fd.try_clone()?),
        ];
        let output = Shm::map(output_fd)?;
        let bls_in = fixed_memfd("rustpy-bls-in", sizes.shared)?;
        let bls_out = fixed_memfd("rustpy-bls-out", sizes.shared)?;
        let child_fds = [
            input.raw_fd(),
            output.raw_fd(),
            bls_in.as_raw_fd(),
            bls_out.as_raw_fd(),
        ];
        Ok(Regions {
            input: InputRegion {
                shm: input,
                pinned: Vec::new(),
            },
            input_view,
            output,
            region_files,
            bls_in: BlsRegion::new(bls_in)?,
            bls_out: BlsRegion::new(bls_out)?,
            child_fds,
        })
    }
}

/// The backend's input region: where each batch goes, around the ranges
/// Python in the worker still views.
pub(super) struct InputRegion {
    pub(super) shm: Shm,
    /// Batches whose input range Python still views: (batch, start, end).
    /// No later batch is written there until the worker releases them.
    pinned: Vec<(u64, usize, usize)>,
}

impl InputRegion {
    /// Where a batch of `needed` bytes goes: the lowest offset that overlaps
    /// no pinned range (0 when nothing is pinned).
    pub(super) fn place(&self, needed: usize) -> usize {
        let mut ranges: Vec<(usize, usize)> = self.pinned.iter().map(|&(_, a, b)| (a, b)).collect();
        ranges.sort_unstable();
        let mut at = 0usize;
        for (start, end) in ranges {
            if at + needed <= start {
                break;
            }
            at = at.max(end.next_multiple_of(PAGE));
        }
        at
    }

    /// After a batch's Done: `released` batches are free again; `batch`
    /// (its range `start..end`) stays untouched while Python views it.
    pub(super) fn update_pins(&mut self, released: &[u64], pin: Option<(u64, usize, usize)>) {
        update_pinned(&mut self.pinned, released, pin);
    }
}

/// Pins first, releases after: Python may free a batch's last view between
/// the worker's pin check and its Done, so one Done can pin a batch and
/// release it; that batch is free (pinned after the release, it would stay
/// pinned for the worker's life).
fn update_pinned(
    pinned: &mut Vec<(u64, usize, usize)>,
    released: &[u64],
    pin: Option<(u64, usize, usize)>,
) {
    pinned.extend(pin);
    pinned.retain(|(b, _, _)| !released.contains(b));
}

// ---- The worker's end. ----

/// What library code in the worker that waits on the backend needs from
/// whoever reads the control socket (rustpy-worker's intake).
pub trait FrameReader: Send + Sync {
    /// A thread is about to wait for a frame (a server call's reply, a
    /// Taken): somebody must read the socket while a batch runs.
    fn need_frames(&self);
    /// Handles the frames that have arrived (a Cancel among them) without
    /// waiting and without waking another thread.
    fn read_arrived(&self);
}

/// The worker's sending half of the control channel, shared by the main
/// thread and every thread user code starts. Responses, log lines, server
/// calls and Done all go through it, so a response held back (see
/// [`WorkerLink::hold_for`]) leaves with whichever frame is flushed next.
pub struct WorkerLink {
    socket: Mutex<HeldWriter>,
    reader: OnceLock<Weak<dyn FrameReader>>,
    /// Called when a send fails: the backend is gone. The binary decides
    /// what that means (rustpy-worker exits: nobody is left to answer).
    on_closed: Box<dyn Fn() + Send + Sync>,
}

struct HeldWriter {
    writer: BufWriter<UnixStream>,
    /// While a batch of a non-decoupled model runs: the thread running it,
    /// whose responses leave with the batch's Done (one write, one wake-up
    /// of the backend) or with the next frame that is flushed.
    hold_for: Option<ThreadId>,
}

/// `msg` as a frame; one too large to send is this message's error (the
/// connection is fine: the backend would take it for a hostile worker).
fn encoded(msg: &FromWorker) -> Result<Vec<u8>> {
    encode_frame(msg).map_err(|e| match e {
        WireError::TooLarge(bytes) => Error::invalid_arg(format!(
            "rustpy: this message to the server needs a control frame of {:.1} MiB, more than the {} MiB a frame may hold (outputs sent after execute returned, and small BLS tensors, travel inside the frame: send large outputs before execute returns)",
            bytes as f64 / f64::from(1u32 << 20),
            super::wire::MAX_FRAME >> 20
        )),
        other => Error::internal(format!("rustpy: {other}")),
    })
}

impl WorkerLink {
    pub fn new(
        socket: UnixStream,
        on_closed: impl Fn() + Send + Sync + 'static,
    ) -> Arc<WorkerLink> {
        Arc::new(WorkerLink {
            socket: Mutex::new(HeldWriter {
                writer: BufWriter::new(socket),
                hold_for: None,
            }),
            reader: OnceLock::new(),
            on_closed: Box::new(on_closed),
        })
    }

    /// Who reads the control socket (set once, after both halves exist).
    pub fn set_reader(&self, reader: Weak<dyn FrameReader>) {
        let _ = self.reader.set(reader);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeldWriter> {
        self.socket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `msg` now (with any response held before it).
    pub fn send(&self, msg: &FromWorker) -> Result<()> {
        let frame = encoded(msg)?;
        let mut s = self.lock();
        let sent = s.writer.write_all(&frame).and_then(|()| s.writer.flush());
        drop(s);
        self.sent(sent)
    }

    /// Sends a response: held back if the thread running a non-decoupled
    /// batch sends it (its Done follows as soon as execute returns).
    pub(super) fn send_response(&self, msg: &FromWorker) -> Result<()> {
        let frame = encoded(msg)?;
        let mut s = self.lock();
        let held = s.hold_for == Some(std::thread::current().id());
        let sent = s.writer.write_all(&frame).and_then(|()| match held {
            true => Ok(()),
            false => s.writer.flush(),
        });
        drop(s);
        self.sent(sent)
    }

    /// Holds the responses `thread` sends until the next flushed frame
    /// (`None`: nobody's).
    pub(super) fn hold_for(&self, thread: Option<ThreadId>) {
        self.lock().hold_for = thread;
    }

    fn sent(&self, sent: std::io::Result<()>) -> Result<()> {
        sent.map_err(|e| {
            (self.on_closed)();
            Error::new(
                ErrorCode::Unavailable,
                format!("the server connection of this worker closed: {e}"),
            )
        })
    }

    pub(super) fn need_frames(&self) {
        if let Some(reader) = self.reader.get().and_then(Weak::upgrade) {
            reader.need_frames();
        }
    }

    pub(super) fn read_arrived(&self) {
        if let Some(reader) = self.reader.get().and_then(Weak::upgrade) {
            reader.read_arrived();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::sys::readable_now;
    use super::super::wire::read_frame;
    use super::*;

    fn link_pair() -> (Arc<WorkerLink>, UnixStream, Arc<AtomicUsize>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        let seen = closed.clone();
        let link = WorkerLink::new(ours, move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        (link, theirs, closed)
    }

    #[test]
    fn a_batch_pinned_and_released_in_one_done_is_free() {
        let mut pinned = vec![(3, 0, 64)];
        update_pinned(&mut pinned, &[4], Some((4, 64, 128)));
        assert_eq!(pinned, [(3, 0, 64)]);
        update_pinned(&mut pinned, &[3], Some((5, 128, 192)));
        assert_eq!(pinned, [(5, 128, 192)]);
        update_pinned(&mut pinned, &[], None);
        assert_eq!(pinned, [(5, 128, 192)]);
    }

    #[test]
    fn a_send_to_a_gone_backend_is_an_error_and_tells_the_link_s_owner() {
        let (link, theirs, closed) = link_pair();
        drop(theirs);
        let err = link
            .send(&FromWorker::Ready { is_ready: false })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert!(err.message.contains("closed"), "{}", err.message);
        assert_eq!(closed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_holding_thread_s_responses_leave_with_the_next_flushed_frame() {
        let (link, mut theirs, _) = link_pair();
        link.hold_for(Some(std::thread::current().id()));
        link.send_response(&FromWorker::Finish { request: 1 })
            .unwrap();
        assert!(
            !readable_now(theirs.as_raw_fd()),
            "a held response was flushed"
        );
        // Another thread's response is not held, and takes the held one along.
        let other = link.clone();
        std::thread::spawn(move || other.send_response(&FromWorker::Finish { request: 2 }))
            .join()
            .unwrap()
            .unwrap();
        for want in [1, 2] {
            match read_frame::<FromWorker, _>(&mut theirs).unwrap() {
                Some(FromWorker::Finish { request }) => assert_eq!(request, want),
                other => panic!("{other:?}"),
            }
        }
        link.hold_for(None);
        link.send_response(&FromWorker::Finish { request: 3 })
            .unwrap();
        assert!(readable_now(theirs.as_raw_fd()));
    }

    #[test]
    fn a_batch_goes_around_the_ranges_python_still_views() {
        let sizes = RegionSizes {
            input: 1 << 20,
            shared: 1 << 20,
        };
        let mut region = Regions::create(sizes).unwrap().input;
        assert_eq!(region.place(100), 0);
        region.update_pins(&[], Some((1, 0, 100)));
        assert_eq!(region.place(100), PAGE);
        region.update_pins(&[], Some((2, PAGE, PAGE + 10)));
        assert_eq!(region.place(100), 2 * PAGE);
        // Batch 1 released: its range is free again; batch 2's is not.
        region.update_pins(&[1], None);
        assert_eq!(region.place(100), 0);
        assert_eq!(region.place(PAGE + 1), 2 * PAGE);
    }
}

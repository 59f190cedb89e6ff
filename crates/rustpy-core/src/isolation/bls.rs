//! BLS tensors of a process-isolated model through shared memory.
//!
//! Per worker the backend creates two more memfd regions (empty until the
//! first large BLS call): `bls-in`, where the worker writes a BLS request's
//! inputs and the backend reads them, and `bls-out`, where the backend
//! writes a BLS response's outputs and the worker reads them. The writing
//! side owns the region's layout: it places each request's (response's)
//! tensors in one free range (the file grows as bytes are written past its
//! end), and frees the range when the reader is done with it:
//!
//! - `bls-in`: the backend copies the inputs out before it answers the
//!   call, so the worker frees the range when the call's Reply arrives;
//! - `bls-out`: the worker copies the outputs out as the response frame
//!   arrives and then tells the backend ([`super::wire::FromWorker::BlsRelease`]).
//!
//! Concurrent calls (Python threads, `async_exec`, a decoupled stream's
//! many responses) each get their own range, so none overwrites another.
//! A region left empty above [`SHRINK_ABOVE`] is truncated back to nothing.
//!
//! Both sides copy with `pwrite`/`pread` on the memfd, never through a
//! mapping: the file can shrink (the writer's shrink, or user code in the
//! worker truncating it), and touching a mapping past the end of its file
//! raises SIGBUS, which in the backend would take the whole server down.
//! A read of a range the file no longer holds is an error for that call.
//! Small tensors (at most [`INLINE_MAX`] bytes in all) stay inline in the
//! frames, where they cost less than a range and a release.
//!
//! [`BackendBls`] and [`WorkerBls`] are the two sides' views of the pair.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};

use super::transport::WorkerLink;
use super::wire::{FromWorker, WireBlsResponse, WireShared, WireTensor};
use crate::error::{Error, Result};
use crate::server::{BlsResponse, OwnedTensor};

/// A BLS request's inputs (a response's outputs) of at most this many bytes
/// in all travel inline in the control frame.
pub const INLINE_MAX: usize = 4096;
/// Tensors start at multiples of this in a BLS region.
const ALIGN: usize = 64;
/// An empty region larger than this is truncated to zero bytes.
const SHRINK_ABOVE: usize = 64 << 20;

/// Whether tensors of these sizes go through shared memory.
pub fn wants_shared<'a>(sizes: impl IntoIterator<Item = &'a [u8]>) -> bool {
    sizes.into_iter().map(<[u8]>::len).sum::<usize>() > INLINE_MAX
}

/// One BLS region as one side sees it (the writer places and frees ranges;
/// the reader only copies out).
pub struct BlsRegion {
    file: File,
    /// Ranges in use, (start, end), sorted by start (writer side).
    used: Vec<(usize, usize)>,
}

impl BlsRegion {
    pub fn new(fd: OwnedFd) -> io::Result<BlsRegion> {
        Ok(BlsRegion {
            file: File::from(fd),
            used: Vec::new(),
        })
    }

    fn len(&self) -> io::Result<usize> {
        Ok(self.file.metadata()?.len() as usize)
    }

    /// The lowest offset where `len` bytes overlap no range in use.
    fn place(&self, len: usize) -> usize {
        let mut at = 0usize;
        for &(start, end) in &self.used {
            if at + len <= start {
                break;
            }
            at = at.max(end.next_multiple_of(ALIGN));
        }
        at
    }

    /// Writer side: places `tensors` in one free range (the file grows as
    /// the bytes are written past its end) and copies their bytes there.
    pub fn put(&mut self, tensors: &[&OwnedTensor]) -> io::Result<WireShared> {
        let mut len = 0usize;
        for t in tensors {
            len = len.next_multiple_of(ALIGN) + t.data.len();
        }
        let start = self.place(len.max(1));
        let mut wire = Vec::with_capacity(tensors.len());
        let mut offset = start;
        for t in tensors {
            offset = offset.next_multiple_of(ALIGN);
            self.file.write_all_at(&t.data, offset as u64)?;
            wire.push(WireTensor {
                name: t.name.clone(),
                dtype: t.dtype.name().to_string(),
                shape: t.shape.clone(),
                offset,
                len: t.data.len(),
            });
            offset += t.data.len();
        }
        let at = self.used.partition_point(|&(s, _)| s < start);
        self.used.insert(at, (start, start + len.max(1)));
        Ok(WireShared {
            start,
            tensors: wire,
        })
    }

    /// Writer side: the reader is done with the range at `start`. An empty
    /// region that grew large gives its memory back.
    pub fn free(&mut self, start: usize) {
        self.used.retain(|&(s, _)| s != start);
        if self.used.is_empty() && self.len().is_ok_and(|len| len > SHRINK_ABOVE) {
            let _ = self.file.set_len(0);
        }
    }

    /// Ranges in use (writer side).
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.used.len()
    }

    /// Reader side: copies the tensors out of the region. The other side
    /// wrote `shared` (the worker may be hostile): every range is checked
    /// against the file before anything is allocated for it.
    pub fn read(&mut self, shared: &WireShared) -> Result<Vec<OwnedTensor>> {
        let bad = |why: String| Error::internal(format!("rustpy: BLS shared memory: {why}"));
        let size = self.len().map_err(|e| bad(e.to_string()))?;
        shared
            .check(size, "BLS region")
            .map_err(|e| bad(e.to_string()))?;
        shared
            .tensors
            .iter()
            .map(|t| {
                let dtype = t.data_type().map_err(|e| bad(e.to_string()))?;
                let mut data = vec![0u8; t.len];
                self.file
                    .read_exact_at(&mut data, t.offset as u64)
                    .map_err(|e| bad(format!("range {}+{} of the region: {e}", t.offset, t.len)))?;
                Ok(OwnedTensor {
                    name: t.name.clone(),
                    dtype,
                    shape: t.shape.clone(),
                    data,
                })
            })
            .collect()
    }
}

/// The backend's side of a worker's BLS regions: it reads request inputs
/// from `input` and writes response outputs into `output`.
pub(super) struct BackendBls {
    input: Mutex<BlsRegion>,
    output: Mutex<BlsRegion>,
}

impl BackendBls {
    pub(super) fn new(input: BlsRegion, output: BlsRegion) -> BackendBls {
        BackendBls {
            input: Mutex::new(input),
            output: Mutex::new(output),
        }
    }

    /// Copies a request's inputs out of the worker's region (before the
    /// call's Reply, which frees their range).
    pub(super) fn read_request_inputs(&self, shared: &WireShared) -> Result<Vec<OwnedTensor>> {
        lock(&self.input).read(shared)
    }

    /// A BLS response for the worker: large outputs go into the output
    /// region (the worker releases their range once it copied them out).
    pub(super) fn response_to_wire(&self, r: BlsResponse) -> WireBlsResponse {
        let placed = wants_shared(r.outputs.iter().map(|t| t.data.as_slice())).then(|| {
            let tensors: Vec<_> = r.outputs.iter().collect();
            lock(&self.output).put(&tensors).map_err(|e| {
                Error::internal(format!(
                    "rustpy: cannot place the BLS response's outputs in shared memory: {e}"
                ))
            })
        });
        WireBlsResponse::new(&r, placed)
    }

    /// The worker copied these responses' outputs out.
    pub(super) fn release(&self, starts: &[usize]) {
        let mut out = lock(&self.output);
        for &start in starts {
            out.free(start);
        }
    }
}

/// The worker's side of its BLS regions: it writes request inputs into
/// `input` (a range is freed when the call's Reply came: the backend copied
/// them out before answering) and reads response outputs from `output` as
/// they arrive, then releases their range through `release`.
pub(super) struct WorkerBls {
    input: Mutex<BlsRegion>,
    output: Mutex<BlsRegion>,
    release: Mutex<mpsc::Sender<usize>>,
}

impl WorkerBls {
    pub(super) fn open(
        (input, output): (OwnedFd, OwnedFd),
        link: &Arc<WorkerLink>,
    ) -> Result<WorkerBls> {
        let io_err = |what: &'static str| {
            move |e: io::Error| Error::internal(format!("rustpy-worker: {what}: {e}"))
        };
        let input = BlsRegion::new(input).map_err(io_err("BLS memory"))?;
        let output = BlsRegion::new(output).map_err(io_err("BLS memory"))?;
        // Releases go out from their own thread: the thread that copies the
        // outputs (the intake) never waits for the control socket.
        let (tx, rx) = mpsc::channel::<usize>();
        let link = link.clone();
        std::thread::Builder::new()
            .name("rustpy-bls-release".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut starts = vec![first];
                    starts.extend(rx.try_iter());
                    if link.send(&FromWorker::BlsRelease { starts }).is_err() {
                        return;
                    }
                }
            })
            .map_err(io_err("BLS release thread"))?;
        Ok(WorkerBls {
            input: Mutex::new(input),
            output: Mutex::new(output),
            release: Mutex::new(tx),
        })
    }

    /// Large inputs go into the input region, in a range of their own
    /// (other threads' calls use other ranges); `None`: they go inline.
    pub(super) fn put_request_inputs(&self, inputs: &[OwnedTensor]) -> Result<Option<WireShared>> {
        if !wants_shared(inputs.iter().map(|t| t.data.as_slice())) {
            return Ok(None);
        }
        let tensors: Vec<_> = inputs.iter().collect();
        lock(&self.input).put(&tensors).map(Some).map_err(|e| {
            Error::internal(format!(
                "rustpy-worker: cannot place the BLS request's inputs in shared memory: {e}"
            ))
        })
    }

    /// The call was answered (or the backend is gone): the inputs were
    /// copied out.
    pub(super) fn request_answered(&self, shared: &WireShared) {
        lock(&self.input).free(shared.start);
    }

    /// Copies a response's outputs out of the output region, whose range the
    /// backend may then reuse.
    pub(super) fn read_response_outputs(&self, shared: &WireShared) -> Result<Vec<OwnedTensor>> {
        let read = lock(&self.output).read(shared);
        let _ = lock(&self.release).send(shared.start);
        read
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::super::sys::memfd;
    use super::*;
    use crate::DataType;

    fn tensor(name: &str, fill: u8, len: usize) -> OwnedTensor {
        OwnedTensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape: vec![len as i64],
            data: vec![fill; len],
        }
    }

    fn pair() -> (BlsRegion, BlsRegion) {
        let fd = memfd("bls-test", 0).unwrap();
        let reader = BlsRegion::new(fd.try_clone().unwrap()).unwrap();
        (BlsRegion::new(fd).unwrap(), reader)
    }

    #[test]
    fn ranges_in_use_are_never_overwritten_and_growth_is_seen_by_the_reader() {
        let (mut w, mut r) = pair();
        let a = w
            .put(&[&tensor("A", 1, 10_000), &tensor("B", 2, 3)])
            .unwrap();
        let b = w.put(&[&tensor("C", 3, 5 << 20)]).unwrap();
        assert!(b.start >= a.tensors[1].offset + 3, "b overlaps a");
        assert!(w.len().unwrap() >= b.start + (5 << 20));
        // The reader reads the grown file at b's offsets.
        let got_a = r.read(&a).unwrap();
        assert_eq!(got_a[0].data, vec![1; 10_000]);
        assert_eq!(got_a[1].data, vec![2; 3]);
        assert_eq!(got_a[1].name, "B");
        let got_b = r.read(&b).unwrap();
        assert!(got_b[0].data.iter().all(|&x| x == 3));
        // Freed ranges are reused; one still in use is not.
        w.free(a.start);
        let c = w.put(&[&tensor("D", 4, 100)]).unwrap();
        assert_eq!(c.start, 0);
        assert!(r.read(&b).unwrap()[0].data.iter().all(|&x| x == 3));
        assert_eq!(w.in_use(), 2);
    }

    #[test]
    fn an_empty_large_region_shrinks_and_grows_again() {
        let (mut w, mut r) = pair();
        let a = w.put(&[&tensor("A", 7, 70 << 20)]).unwrap();
        assert!(r.read(&a).unwrap()[0].data.iter().all(|&x| x == 7));
        w.free(a.start);
        assert_eq!(w.len().unwrap(), 0);
        let b = w.put(&[&tensor("B", 9, 8 << 10)]).unwrap();
        assert_eq!(r.read(&b).unwrap()[0].data, vec![9; 8 << 10]);
    }

    #[test]
    fn a_range_outside_the_region_is_an_error() {
        let (mut w, mut r) = pair();
        let mut a = w.put(&[&tensor("A", 1, 8192)]).unwrap();
        a.tensors[0].offset = 1 << 40;
        assert!(r.read(&a).is_err());
    }

    #[test]
    fn a_region_truncated_under_the_reader_fails_the_read_without_a_signal() {
        // User code in the worker may truncate the memfd; a mapping read
        // past the file's end would raise SIGBUS in the backend.
        let (mut w, mut r) = pair();
        let a = w.put(&[&tensor("A", 5, 1 << 20)]).unwrap();
        w.file.set_len(0).unwrap();
        let err = r.read(&a).unwrap_err();
        assert!(err.message.contains("BLS shared memory"), "{}", err.message);
        // The writer's next put extends the file again.
        let b = w.put(&[&tensor("B", 6, 8192)]).unwrap();
        assert_eq!(r.read(&b).unwrap()[0].data, vec![6; 8192]);
    }
}

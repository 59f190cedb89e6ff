//! BLS tensors of a process-isolated model through shared memory.
//!
//! Per worker the backend creates two more memfd regions: `bls-in`, where
//! the worker writes a BLS request's inputs and the backend reads them, and
//! `bls-out`, where the backend writes a BLS response's outputs and the
//! worker reads them. Like every shared region they have a fixed size
//! (`rustpy.shm_limit_mb`; sparse: memory only for the bytes written) that
//! nobody can change (sys::fixed_memfd). The writing side owns the region's
//! layout: it places each request's (response's) tensors in one free range,
//! and frees the range when the reader is done with it:
//!
//! - `bls-in`: the backend copies the inputs out before it answers the
//!   call, so the worker frees the range when the call's Reply arrives;
//! - `bls-out`: the worker copies the outputs out as the response frame
//!   arrives and then tells the backend ([`super::wire::FromWorker::BlsRelease`]).
//!
//! Concurrent calls (Python threads, `async_exec`, a decoupled stream's
//! many responses) each get their own range, so none overwrites another.
//! Tensors that do not fit in the region fail their call with an error
//! naming the limit. Once no range is in use, a region that held more than
//! [`SHRINK_ABOVE`] gives its memory back (a hole punched over it).
//!
//! Both sides copy through a shared mapping of the whole region (a
//! [`sys::fixed_memfd`]: nobody can shrink it under the mapping, so no
//! touch of it can fault; a hole punched into it reads as zeros). `pread`
//! and `pwrite` on the memfd cost 1.6–3.5× a copy through the mapping for a
//! 32 MiB tensor here (page-cache lookups per page). The reader checks
//! every range the other side claims against the region before it
//! allocates anything for it ([`WireShared::check`]). Small tensors (at most [`INLINE_MAX`] bytes in
//! all) stay inline in the frames, where they cost less than a range and a
//! release.
//!
//! [`BackendBls`] and [`WorkerBls`] are the two sides' views of the pair.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc, Mutex};

use super::sys;
use super::transport::WorkerLink;
use super::wire::{check_tensor, FromWorker, WireBlsResponse, WireShared, WireTensor};
use crate::error::{Error, Result};
use crate::server::{BlsResponse, OwnedTensor};
use rustpy_config::model::SHM_LIMIT_KEY;

/// A BLS request's inputs (a response's outputs) of at most this many bytes
/// in all travel inline in the control frame.
pub const INLINE_MAX: usize = 4096;
/// Tensors start at multiples of this in a BLS region.
const ALIGN: usize = 64;
/// A region left with no range in use, which held more than this, gives
/// its memory back.
const SHRINK_ABOVE: usize = 64 << 20;

/// Whether tensors of these sizes go through shared memory.
pub fn wants_shared<'a>(sizes: impl IntoIterator<Item = &'a [u8]>) -> bool {
    sizes.into_iter().map(<[u8]>::len).sum::<usize>() > INLINE_MAX
}

/// One BLS region as one side sees it (the writer places and frees ranges;
/// the reader only copies out).
pub struct BlsRegion {
    fd: OwnedFd,
    /// The whole region, mapped (its size is fixed: sys::fixed_memfd).
    map: Arc<sys::Mapping>,
    /// The region's size.
    size: usize,
    /// Ranges in use, (start, end), sorted by start (writer side).
    used: Vec<(usize, usize)>,
    /// The furthest end written since the memory was last given back.
    high: usize,
}

impl BlsRegion {
    pub fn new(fd: OwnedFd) -> io::Result<BlsRegion> {
        let map = Arc::new(sys::Mapping::new(&fd)?);
        let size = map.len();
        Ok(BlsRegion {
            fd,
            map,
            size,
            used: Vec::new(),
            high: 0,
        })
    }

    /// Another handle on the same region (no ranges in use).
    pub fn try_clone(&self) -> io::Result<BlsRegion> {
        BlsRegion::new(self.fd.try_clone()?)
    }

    /// The region's file (tests: its memory and seals).
    #[cfg(test)]
    fn file(&self) -> std::fs::File {
        std::fs::File::from(self.fd.try_clone().unwrap())
    }

    /// Writes `bytes` at `offset` (fuzzing: what a worker may have put there).
    pub(super) fn write_at(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        self.map.write(offset, bytes)
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

    /// Writer side: takes a free range of `len` bytes and returns its
    /// start, or `Err(where it would start)` when it does not fit.
    fn reserve(&mut self, len: usize) -> std::result::Result<usize, usize> {
        let start = self.place(len.max(1));
        if start + len > self.size {
            return Err(start);
        }
        let at = self.used.partition_point(|&(s, _)| s < start);
        self.used.insert(at, (start, start + len.max(1)));
        self.high = self.high.max(start + len);
        Ok(start)
    }

    /// Writer side: places `tensors` in one free range and copies their
    /// bytes there; an error when they do not fit in the region.
    pub fn put(&mut self, tensors: &[&OwnedTensor]) -> io::Result<WireShared> {
        let mut len = 0usize;
        for t in tensors {
            len = len.next_multiple_of(ALIGN) + t.data.len();
        }
        let start = self.reserve(len).map_err(|start| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "they need {:.1} MiB{}, more than the BLS shared memory of {} MiB holds ({SHM_LIMIT_KEY}); raise the limit or send smaller tensors",
                    len as f64 / f64::from(1u32 << 20),
                    match start {
                        0 => String::new(),
                        _ => format!(" next to {:.1} MiB of other calls", start as f64 / f64::from(1u32 << 20)),
                    },
                    self.size >> 20
                ),
            )
        })?;
        let mut wire = Vec::with_capacity(tensors.len());
        let mut offset = start;
        for t in tensors {
            offset = offset.next_multiple_of(ALIGN);
            if let Err(e) = self.map.write(offset, &t.data) {
                self.free(start);
                return Err(e);
            }
            wire.push(WireTensor {
                name: t.name.clone(),
                dtype: t.dtype.name().to_string(),
                shape: t.shape.clone(),
                offset,
                len: t.data.len(),
            });
            offset += t.data.len();
        }
        Ok(WireShared {
            start,
            tensors: wire,
        })
    }

    /// Writer side: the reader is done with the range at `start`. An empty
    /// region that grew large gives its memory back.
    pub fn free(&mut self, start: usize) {
        self.used.retain(|&(s, _)| s != start);
        if self.used.is_empty() && self.high > SHRINK_ABOVE {
            let _ = sys::punch_hole(&self.fd, 0, self.size);
            self.high = 0;
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
        shared
            .check(self.size, "BLS region")
            .map_err(|e| bad(e.to_string()))?;
        shared
            .tensors
            .iter()
            .map(|t| {
                let dtype = t.data_type().map_err(|e| bad(e.to_string()))?;
                let bytes = self
                    .map
                    .slice(t.offset, t.len)
                    .map_err(|e| bad(format!("range {}+{} of the region: {e}", t.offset, t.len)))?;
                let data = crate::buffers::copy_of(bytes);
                Ok(OwnedTensor {
                    name: t.name.clone(),
                    dtype,
                    shape: t.shape.clone(),
                    data: data.into(),
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

    /// The size of the worker's BLS input region.
    pub(super) fn input_size(&self) -> usize {
        lock(&self.input).size
    }

    /// Copies a request's inputs out of the worker's region (before the
    /// call's Reply, which frees their range).
    pub(super) fn read_request_inputs(&self, shared: &WireShared) -> Result<Vec<OwnedTensor>> {
        let tensors = lock(&self.input).read(shared)?;
        for t in &tensors {
            check_tensor(&t.name, t.dtype, &t.shape, &t.data)
                .map_err(|e| Error::internal(format!("rustpy: BLS shared memory: {e}")))?;
        }
        Ok(tensors)
    }

    /// A BLS response for the worker: large outputs go into the output
    /// region (the worker releases their range once it copied them out).
    pub(super) fn response_to_wire(&self, r: BlsResponse) -> WireBlsResponse {
        let placed = wants_shared(r.outputs.iter().map(|t| &t.data[..])).then(|| {
            let tensors: Vec<_> = r.outputs.iter().collect();
            lock(&self.output).put(&tensors).map_err(|e| {
                Error::internal(format!(
                    "rustpy: cannot place the BLS response's outputs in shared memory: {e}"
                ))
            })
        });
        let wire = WireBlsResponse::new(&r, placed);
        for output in r.outputs {
            output.data.recycle();
        }
        wire
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
        if !wants_shared(inputs.iter().map(|t| &t.data[..])) {
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
    use super::super::sys::fixed_memfd;
    use super::*;
    use crate::DataType;

    fn tensor(name: &str, fill: u8, len: usize) -> OwnedTensor {
        OwnedTensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape: vec![len as i64],
            data: vec![fill; len].into(),
        }
    }

    /// Writer and reader of one region of `size` bytes.
    fn pair_of(size: usize) -> (BlsRegion, BlsRegion) {
        let fd = fixed_memfd("bls-test", size).unwrap();
        let reader = BlsRegion::new(fd.try_clone().unwrap()).unwrap();
        (BlsRegion::new(fd).unwrap(), reader)
    }

    fn pair() -> (BlsRegion, BlsRegion) {
        pair_of(128 << 20)
    }

    /// Bytes of memory the region's file holds.
    fn allocated(r: &BlsRegion) -> u64 {
        use std::os::unix::fs::MetadataExt;
        r.file().metadata().unwrap().blocks() * 512
    }

    #[test]
    fn ranges_in_use_are_never_overwritten() {
        let (mut w, mut r) = pair();
        let a = w
            .put(&[&tensor("A", 1, 10_000), &tensor("B", 2, 3)])
            .unwrap();
        let b = w.put(&[&tensor("C", 3, 5 << 20)]).unwrap();
        assert!(b.start >= a.tensors[1].offset + 3, "b overlaps a");
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
    fn an_idle_region_that_held_much_gives_its_memory_back() {
        let (mut w, mut r) = pair();
        let a = w.put(&[&tensor("A", 7, 70 << 20)]).unwrap();
        assert!(allocated(&w) >= 70 << 20);
        assert!(r.read(&a).unwrap()[0].data.iter().all(|&x| x == 7));
        w.free(a.start);
        assert_eq!(allocated(&w), 0);
        let b = w.put(&[&tensor("B", 9, 8 << 10)]).unwrap();
        assert_eq!(r.read(&b).unwrap()[0].data, vec![9; 8 << 10]);
    }

    #[test]
    fn tensors_that_do_not_fit_the_region_are_an_error_naming_the_limit() {
        let (mut w, _) = pair_of(1 << 20);
        let a = w.put(&[&tensor("A", 1, 700 << 10)]).unwrap();
        let err = w.put(&[&tensor("B", 2, 700 << 10)]).unwrap_err();
        assert!(err.to_string().contains(SHM_LIMIT_KEY), "{err}");
        assert!(err.to_string().contains("next to"), "{err}");
        w.free(a.start);
        assert!(w.put(&[&tensor("B", 2, 700 << 10)]).is_ok());
        let err = w.put(&[&tensor("C", 3, 2 << 20)]).unwrap_err();
        assert!(err.to_string().contains("1 MiB"), "{err}");
    }

    #[test]
    fn a_range_outside_the_region_or_claimed_twice_is_an_error() {
        let (mut w, mut r) = pair_of(1 << 20);
        let mut a = w.put(&[&tensor("A", 1, 8192)]).unwrap();
        a.tensors[0].offset = 1 << 40;
        assert!(r.read(&a).is_err());
        // The same (legal) range claimed by many tensors: refused before
        // anything is allocated, so no claim makes the reader copy more
        // than the region holds.
        let b = w.put(&[&tensor("B", 2, 600 << 10)]).unwrap();
        let mut twice = b.clone();
        twice.tensors.push(twice.tensors[0].clone());
        let err = r.read(&twice).unwrap_err();
        assert!(err.message.contains("overlap"), "{}", err.message);
        assert_eq!(r.read(&b).unwrap()[0].data, vec![2; 600 << 10]);
    }

    #[test]
    fn nobody_can_resize_a_region() {
        // User code in the worker holds the fd: a truncated region would
        // fail reads, a grown one would hold memory beyond the limit.
        let (w, _) = pair_of(1 << 20);
        assert!(w.file().set_len(0).is_err());
        assert!(w.file().set_len(2 << 20).is_err());
        assert!(std::os::unix::fs::FileExt::write_all_at(&w.file(), b"x", 1 << 20).is_err());
    }
}

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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use super::sys;
use super::transport::WorkerLink;
use super::wire::{check_tensor, FromWorker, WireBlsResponse, WireShared, WireTensor};
use crate::error::{Error, Result};
use crate::server::{BlsResponse, OutputArena, OwnedTensor, PlacedBytes, TensorData};
use crate::DataType;
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
    /// Ranges in use, (start, end), sorted by start (writer side).
    used: Vec<(usize, usize)>,
    /// The furthest end written since the memory was last given back.
    high: usize,
}

impl BlsRegion {
    pub fn new(fd: OwnedFd) -> io::Result<BlsRegion> {
        let map = Arc::new(sys::Mapping::new(&fd)?);
        Ok(BlsRegion {
            fd,
            map,
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

    /// The region's size (fixed).
    fn size(&self) -> usize {
        self.map.len()
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
        if start + len > self.size() {
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
                    self.size() >> 20
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
            let _ = sys::punch_hole(&self.fd, 0, self.size());
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
            .check(self.size(), "BLS region")
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

/// A BLS region on its writer's side, also an [`OutputArena`]: a tensor
/// can be written into a range of it where it is made (a called model's
/// output by our BLS allocator in the backend, src/ffi/server/bls.rs; a
/// request's input by `bls_infer` in the worker), so that nothing copies it
/// into the region afterwards.
pub(super) struct RegionArena {
    region: Arc<Mutex<BlsRegion>>,
    memory: Arc<sys::Mapping>,
}

impl RegionArena {
    fn new(region: BlsRegion) -> Arc<RegionArena> {
        Arc::new(RegionArena {
            memory: region.map.clone(),
            region: Arc::new(Mutex::new(region)),
        })
    }

    /// The guard of the range `t`'s bytes hold in this region, if they lie in one.
    fn guard_of<'t>(&self, t: &'t OwnedTensor) -> Option<&'t RangeGuard> {
        let placed = t.data.placed()?;
        let guard = placed.hold().downcast_ref::<RangeGuard>()?;
        Arc::ptr_eq(&guard.region, &self.region).then_some(guard)
    }

    /// Where the reader finds `tensors`, or `None`: they travel inline
    /// (small, none in the region). Tensors already in the region stay
    /// where they are, the others are copied into one range. Once the
    /// answer is on its way, call [`RegionArena::hand_over`]: from then on
    /// only the reader's release ([`RegionArena::free`]) frees those ranges.
    fn to_wire(&self, tensors: &[OwnedTensor]) -> io::Result<Option<WireShared>> {
        let guards: Vec<Option<&RangeGuard>> = tensors.iter().map(|t| self.guard_of(t)).collect();
        let any_placed = guards.iter().any(Option::is_some);
        if !any_placed && !wants_shared(tensors.iter().map(|t| &t.data[..])) {
            return Ok(None);
        }
        let rest: Vec<&OwnedTensor> = tensors
            .iter()
            .zip(&guards)
            .filter(|(_, g)| g.is_none())
            .map(|(t, _)| t)
            .collect();
        let copied = match rest.is_empty() {
            true => None,
            false => Some(lock(&self.region).put(&rest)?),
        };
        let start = copied.as_ref().map(|c| c.start);
        let mut copied = copied.map(|c| c.tensors).unwrap_or_default().into_iter();
        let wire: Vec<WireTensor> = tensors
            .iter()
            .zip(&guards)
            .filter_map(|(t, guard)| match guard {
                Some(g) => Some(WireTensor {
                    name: t.name.clone(),
                    dtype: t.dtype.name().to_string(),
                    shape: t.shape.clone(),
                    offset: g.start,
                    len: t.data.len(),
                }),
                None => copied.next(),
            })
            .collect();
        let start = start
            .or_else(|| wire.first().map(|t| t.offset))
            .unwrap_or(0);
        Ok(Some(WireShared {
            start,
            tensors: wire,
        }))
    }

    /// The tensors' placed ranges now end with the reader's release
    /// ([`RegionArena::free`]), not with the tensors.
    fn hand_over(&self, tensors: &[OwnedTensor]) {
        for t in tensors {
            if let Some(g) = self.guard_of(t) {
                g.handed_over.store(true, Ordering::Release);
            }
        }
    }

    /// Frees the ranges starting at these offsets (unknown ones are ignored).
    fn free(&self, starts: &[usize]) {
        let mut region = lock(&self.region);
        for &start in starts {
            region.free(start);
        }
    }
}

/// The ranges a [`WireShared`] uses, by their starts: the copied tensors
/// share one from `shared.start`, each tensor written in place has its own.
/// An empty tensor names no range (its offset may be where the next range
/// starts, right after its own).
pub(super) fn starts_of(shared: &WireShared) -> Vec<usize> {
    let mut starts: Vec<usize> = shared
        .tensors
        .iter()
        .filter(|t| t.len > 0)
        .map(|t| t.offset)
        .collect();
    starts.push(shared.start);
    starts.sort_unstable();
    starts.dedup();
    starts
}

impl std::fmt::Debug for RegionArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegionArena({} bytes)", self.memory.len())
    }
}

impl OutputArena for RegionArena {
    fn place(&self, len: usize) -> Option<PlacedBytes> {
        if len <= INLINE_MAX {
            return None;
        }
        let start = lock(&self.region).reserve(len).ok()?;
        let guard = RangeGuard {
            region: self.region.clone(),
            start,
            handed_over: AtomicBool::new(false),
        };
        // Inside the region (reserve checked it); else the guard frees it.
        PlacedBytes::new(self.memory.clone(), start, len, Box::new(guard))
    }
}

/// A range placed for one tensor: freed when dropped (the tensor never
/// reached the reader), unless handed over to the reader's release.
struct RangeGuard {
    region: Arc<Mutex<BlsRegion>>,
    start: usize,
    handed_over: AtomicBool,
}

impl Drop for RangeGuard {
    fn drop(&mut self) {
        if !self.handed_over.load(Ordering::Acquire) {
            lock(&self.region).free(self.start);
        }
    }
}

/// The backend's side of a worker's BLS regions: the server reads request
/// inputs in `input` in place (BYTES are copied out: the worker could
/// change their lengths while they are parsed); response outputs go into
/// `output`, written there by the called model itself (our allocator places
/// them) or else copied.
pub(super) struct BackendBls {
    /// Read only: the worker places the ranges.
    input: Arc<sys::Mapping>,
    output: Arc<RegionArena>,
}

impl BackendBls {
    pub(super) fn new(input: BlsRegion, output: BlsRegion) -> BackendBls {
        BackendBls {
            input: input.map,
            output: RegionArena::new(output),
        }
    }

    /// The size of the worker's BLS input region.
    pub(super) fn input_size(&self) -> usize {
        self.input.len()
    }

    /// Where the called model writes a BLS response's large outputs.
    pub(super) fn output_arena(&self) -> Arc<dyn OutputArena> {
        self.output.clone()
    }

    /// A request's inputs in the worker's region: fixed-size tensors in
    /// place, each holding a clone of `held` (so the caller learns, from
    /// its receiver's disconnection, when the server dropped the last of
    /// them), BYTES copied out. Each is checked against its shape.
    pub(super) fn read_request_inputs(
        &self,
        shared: &WireShared,
        held: &crossbeam::channel::Sender<()>,
    ) -> Result<Vec<OwnedTensor>> {
        let bad = |why: String| Error::internal(format!("rustpy: BLS shared memory: {why}"));
        shared
            .check(self.input.len(), "BLS region")
            .map_err(|e| bad(e.to_string()))?;
        let mut tensors = Vec::with_capacity(shared.tensors.len());
        for t in &shared.tensors {
            let dtype = t.data_type().map_err(|e| bad(e.to_string()))?;
            let range = || bad(format!("range {}+{} of the region", t.offset, t.len));
            let data = match dtype {
                DataType::Bytes => {
                    let bytes = self.input.slice(t.offset, t.len).map_err(|_| range())?;
                    crate::buffers::copy_of(bytes).into()
                }
                _ => {
                    let hold = Box::new(held.clone());
                    let placed = PlacedBytes::new(self.input.clone(), t.offset, t.len, hold);
                    TensorData::Placed(placed.ok_or_else(range)?)
                }
            };
            let tensor = OwnedTensor {
                name: t.name.clone(),
                dtype,
                shape: t.shape.clone(),
                data,
            };
            check_tensor(&tensor.name, tensor.dtype, &tensor.shape, &tensor.data)
                .map_err(|e| bad(e.to_string()))?;
            tensors.push(tensor);
        }
        Ok(tensors)
    }

    /// A BLS response for the worker: its outputs in the output region
    /// (the worker releases their ranges once it has read them) or inline.
    pub(super) fn response_to_wire(&self, r: BlsResponse) -> WireBlsResponse {
        let placed = self.output.to_wire(&r.outputs).map_err(|e| {
            Error::internal(format!(
                "rustpy: cannot place the BLS response's outputs in shared memory: {e}"
            ))
        });
        let wire = WireBlsResponse::new(&r, placed.transpose());
        if wire.shared.is_some() {
            self.output.hand_over(&r.outputs);
        }
        for output in r.outputs {
            output.data.recycle();
        }
        wire
    }

    /// The worker read these responses' outputs (BlsRelease).
    pub(super) fn release(&self, starts: &[usize]) {
        self.output.free(starts);
    }
}

/// The worker's side of its BLS regions: it writes request inputs into
/// `input` (their ranges are freed when the backend refuses the call, or
/// by `BlsInputsRead` once the server released an accepted one) and reads
/// response outputs from `output` as they arrive, then releases their
/// ranges through `release`.
pub(super) struct WorkerBls {
    input: Arc<RegionArena>,
    output: Mutex<BlsRegion>,
    release: Mutex<mpsc::Sender<Vec<usize>>>,
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
        let (tx, rx) = mpsc::channel::<Vec<usize>>();
        let link = link.clone();
        std::thread::Builder::new()
            .name("rustpy-bls-release".into())
            .spawn(move || {
                while let Ok(mut starts) = rx.recv() {
                    starts.extend(rx.try_iter().flatten());
                    if link.send(&FromWorker::BlsRelease { starts }).is_err() {
                        return;
                    }
                }
            })
            .map_err(io_err("BLS release thread"))?;
        Ok(WorkerBls {
            input: RegionArena::new(input),
            output: Mutex::new(output),
            release: Mutex::new(tx),
        })
    }

    /// Where `bls_infer` writes a request's large inputs as it converts them.
    pub(super) fn input_arena(&self) -> Arc<dyn OutputArena> {
        self.input.clone()
    }

    /// The request's inputs in the input region (in ranges of their own:
    /// other threads' calls use others), or `None`: they go inline. Call
    /// [`WorkerBls::request_sent`] before dropping the inputs.
    pub(super) fn put_request_inputs(&self, inputs: &[OwnedTensor]) -> Result<Option<WireShared>> {
        self.input.to_wire(inputs).map_err(|e| {
            Error::internal(format!(
                "rustpy-worker: cannot place the BLS request's inputs in shared memory: {e}"
            ))
        })
    }

    /// The request went out with its inputs in the region: their ranges
    /// are freed by [`WorkerBls::request_refused`] or [`WorkerBls::inputs_read`],
    /// no longer by the inputs.
    pub(super) fn request_sent(&self, inputs: &[OwnedTensor]) {
        self.input.hand_over(inputs);
    }

    /// The backend refused the call (or is gone): the inputs' ranges are free.
    pub(super) fn request_refused(&self, shared: &WireShared) {
        self.input.free(&starts_of(shared));
    }

    /// `BlsInputsRead`: the ranges at `starts` are free.
    pub(super) fn inputs_read(&self, starts: &[usize]) {
        self.input.free(starts);
    }

    /// Copies a response's outputs out of the output region, whose ranges
    /// the backend may then reuse.
    pub(super) fn read_response_outputs(&self, shared: &WireShared) -> Result<Vec<OwnedTensor>> {
        let read = lock(&self.output).read(shared);
        let _ = lock(&self.release).send(starts_of(shared));
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

    /// A tensor written straight into a range of `arena` (as our BLS
    /// allocator or `bls_infer` do).
    fn placed(arena: &RegionArena, name: &str, fill: u8, len: usize) -> OwnedTensor {
        let p = arena.place(len).expect("a range");
        assert!(p.write(&vec![fill; len]));
        OwnedTensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape: vec![len as i64],
            data: TensorData::Placed(p),
        }
    }

    fn ranges(arena: &RegionArena) -> usize {
        lock(&arena.region).in_use()
    }

    #[test]
    fn tensors_written_in_place_are_sent_where_they_are_and_the_rest_copied() {
        let (w, mut r) = pair();
        let arena = RegionArena::new(w);
        let a = placed(&arena, "A", 1, 100_000);
        let a_at = a.data.placed().unwrap().offset();
        let tensors = vec![a, tensor("B", 2, 10), placed(&arena, "C", 3, 5 << 20)];
        let shared = arena.to_wire(&tensors).unwrap().expect("in the region");
        // In output order; A and C not moved, B copied into a range of its own.
        let names: Vec<_> = shared.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(shared.tensors[0].offset, a_at);
        assert_eq!(ranges(&arena), 3);
        let got = r.read(&shared).unwrap();
        assert_eq!(got[0].data, vec![1; 100_000]);
        assert_eq!(got[1].data, vec![2; 10]);
        assert!(got[2].data.iter().all(|&x| x == 3));
        // Handed over, dropping the tensors frees nothing: the reader does.
        arena.hand_over(&tensors);
        drop(tensors);
        assert_eq!(ranges(&arena), 3);
        arena.free(&starts_of(&shared));
        assert_eq!(ranges(&arena), 0);
    }

    #[test]
    fn a_range_whose_tensor_never_left_is_freed_with_it() {
        let (w, _) = pair_of(1 << 20);
        let arena = RegionArena::new(w);
        let t = placed(&arena, "A", 1, 600 << 10);
        // The region is taken: a second one does not fit (the allocator
        // then gives the output a buffer of its own) ...
        assert!(arena.place(600 << 10).is_none());
        assert!(
            arena.place(INLINE_MAX).is_none(),
            "small tensors stay inline"
        );
        drop(t);
        // ... until the first tensor is dropped without being sent.
        assert_eq!(ranges(&arena), 0);
        assert!(arena.place(600 << 10).is_some());
    }

    #[test]
    fn small_tensors_of_their_own_travel_inline() {
        let (w, _) = pair();
        let arena = RegionArena::new(w);
        assert!(arena.to_wire(&[tensor("A", 1, 100)]).unwrap().is_none());
        assert_eq!(ranges(&arena), 0);
    }

    #[test]
    fn the_backend_reads_fixed_size_inputs_in_place_until_the_server_drops_them() {
        let (mut worker, _) = pair();
        let (out, _) = pair();
        let backend = BackendBls::new(worker.try_clone().unwrap(), out);
        let mut text = 5u32.to_le_bytes().to_vec();
        text.extend_from_slice(b"hello");
        let strings = OwnedTensor {
            name: "S".into(),
            dtype: DataType::Bytes,
            shape: vec![1],
            data: text.clone().into(),
        };
        let shared = worker.put(&[&tensor("A", 5, 10_000), &strings]).unwrap();
        let (held, read) = crossbeam::channel::bounded::<()>(0);
        let inputs = backend.read_request_inputs(&shared, &held).unwrap();
        drop(held);
        // Fixed-size: the worker's bytes where they are; BYTES: a copy (the
        // worker could change the lengths while they are parsed).
        assert_eq!(
            inputs[0].data.placed().unwrap().offset(),
            shared.tensors[0].offset
        );
        assert_eq!(inputs[0].data, vec![5; 10_000]);
        assert!(inputs[1].data.placed().is_none());
        assert_eq!(inputs[1].data, text);
        // Held while the server holds an input read in place ...
        assert_eq!(
            read.try_recv(),
            Err(crossbeam::channel::TryRecvError::Empty)
        );
        drop(inputs);
        // ... and let go with the last one.
        assert_eq!(
            read.try_recv(),
            Err(crossbeam::channel::TryRecvError::Disconnected)
        );
        // A range outside the region is refused before anything is held.
        let mut wrong = shared.clone();
        wrong.tensors[0].offset = 1 << 40;
        let (held, read) = crossbeam::channel::bounded::<()>(0);
        assert!(backend.read_request_inputs(&wrong, &held).is_err());
        drop(held);
        assert_eq!(
            read.try_recv(),
            Err(crossbeam::channel::TryRecvError::Disconnected)
        );
    }

    #[test]
    fn an_empty_tensor_never_frees_the_range_after_its_own() {
        let (w, _) = pair();
        let arena = RegionArena::new(w);
        // An empty tensor last in a copied range sits at that range's end,
        // where the next range starts.
        let first = arena
            .to_wire(&[tensor("A", 1, 8192), tensor("E", 0, 0)])
            .unwrap()
            .unwrap();
        let next = arena.to_wire(&[tensor("B", 2, 8192)]).unwrap().unwrap();
        assert_eq!(first.tensors[1].offset, next.start);
        arena.free(&starts_of(&first));
        assert_eq!(ranges(&arena), 1, "the next range is still in use");
        arena.free(&starts_of(&next));
        assert_eq!(ranges(&arena), 0);
    }
}

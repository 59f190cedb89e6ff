//! Tensor memory, in the spirit of Triton's `BackendInputCollector` and
//! `BackendOutputResponder`: every buffer of tensor bytes carries where it
//! lives ([`MemoryKind`]), and what may be done with it follows from that,
//! never from a global. Gathering one tensor from its buffers is *plan,
//! then copy* ([`plan_gather`]): a tensor whose buffers all lie back to back
//! in one shared region is handed over in place; anything else is copied.
//!
//! Device memory is refused in one place, [`MemoryKind::require_host`], with
//! one message: GPU tensors are a new kind plus the code that reads it, not
//! a search for every place that assumes host memory.

use std::fmt;

use super::shared::SharedRegion;
use crate::error::{Error, Result};

/// Triton's `TRITONSERVER_MemoryType` values.
pub const MEMORY_CPU: u32 = 0;
pub const MEMORY_CPU_PINNED: u32 = 1;
pub const MEMORY_GPU: u32 = 2;

/// Where a buffer's bytes live, and who owns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Host memory lent for the duration of one call (Triton's request
    /// buffers, a caller's tensors). It is read in place while the call
    /// runs; whatever may outlive the call (a numpy array handed to Python)
    /// gets a copy (docs/python-api.md, "Inputs are copies").
    HostBorrowed,
    /// Host memory that travels with its tensor (an owned tensor's bytes:
    /// BLS tensors, the local runner's responses, filled defaults).
    HostOwned,
    /// A process-isolated worker's shared input region: Python may view it
    /// in place, and the view keeps the region mapped ([`SharedRegion`]).
    SharedRegion,
    /// Device memory (GPU `id`): not readable from the host.
    Device { id: i64 },
}

impl MemoryKind {
    /// The kind of memory Triton hands over as (memory type, id): CPU and
    /// pinned CPU memory is host memory lent for the call; anything else is
    /// device memory.
    pub fn from_triton(memory_type: u32, id: i64) -> MemoryKind {
        match memory_type {
            MEMORY_CPU | MEMORY_CPU_PINNED => MemoryKind::HostBorrowed,
            _ => MemoryKind::Device { id },
        }
    }

    /// Triton's (memory type, id) for this memory.
    pub fn to_triton(self) -> (u32, i64) {
        match self {
            MemoryKind::Device { id } => (MEMORY_GPU, id),
            _ => (MEMORY_CPU, 0),
        }
    }

    pub fn is_host(self) -> bool {
        !matches!(self, MemoryKind::Device { .. })
    }

    /// The one place device memory is refused: rustpy reads and writes
    /// tensors in host memory only. Callers add which tensor it was.
    pub fn require_host(self) -> Result<()> {
        match self {
            MemoryKind::Device { id } => Err(Error::unsupported(format!(
                "the tensor is in GPU memory (device {id}); rustpy reads and writes tensors in host (CPU) memory only"
            ))),
            _ => Ok(()),
        }
    }
}

/// One buffer of a tensor's bytes and the memory it lives in. Triton hands
/// an input over in as many buffers as the client sent; an output goes out
/// as one.
#[derive(Clone)]
pub struct TensorBuffer<'a> {
    /// The bytes (empty for device memory, which the host cannot read).
    bytes: &'a [u8],
    memory: Memory,
}

#[derive(Clone)]
enum Memory {
    HostBorrowed,
    HostOwned,
    Shared(SharedRegion),
    Device { id: i64, len: usize },
}

impl<'a> TensorBuffer<'a> {
    /// Host memory lent for the call (see [`MemoryKind::HostBorrowed`]).
    pub fn borrowed(bytes: &'a [u8]) -> Self {
        TensorBuffer {
            bytes,
            memory: Memory::HostBorrowed,
        }
    }

    /// The bytes of a tensor that owns them (see [`MemoryKind::HostOwned`]).
    pub fn owned(bytes: &'a [u8]) -> Self {
        TensorBuffer {
            bytes,
            memory: Memory::HostOwned,
        }
    }

    /// Bytes inside `region` (a worker's shared input region). Bytes that do
    /// not lie inside it are plain borrowed host memory.
    pub fn shared(bytes: &'a [u8], region: SharedRegion) -> Self {
        let memory = if region.contains(bytes) {
            Memory::Shared(region)
        } else {
            Memory::HostBorrowed
        };
        TensorBuffer { bytes, memory }
    }

    /// `len` bytes of device memory on GPU `id`.
    pub fn device(id: i64, len: usize) -> Self {
        TensorBuffer {
            bytes: &[],
            memory: Memory::Device { id, len },
        }
    }

    pub fn kind(&self) -> MemoryKind {
        match &self.memory {
            Memory::HostBorrowed => MemoryKind::HostBorrowed,
            Memory::HostOwned => MemoryKind::HostOwned,
            Memory::Shared(_) => MemoryKind::SharedRegion,
            Memory::Device { id, .. } => MemoryKind::Device { id: *id },
        }
    }

    pub fn len(&self) -> usize {
        match &self.memory {
            Memory::Device { len, .. } => *len,
            _ => self.bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, for reading on the host; device memory is refused
    /// ([`MemoryKind::require_host`]).
    pub fn host(&self) -> Result<&'a [u8]> {
        self.kind().require_host()?;
        Ok(self.bytes)
    }

    /// The shared region the bytes lie in, if any.
    pub fn region(&self) -> Option<&SharedRegion> {
        match &self.memory {
            Memory::Shared(region) => Some(region),
            _ => None,
        }
    }
}

impl fmt::Debug for TensorBuffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TensorBuffer({:?}, {} bytes)", self.kind(), self.len())
    }
}

/// How one tensor is assembled from its buffers (planned first, then done
/// by whoever owns the destination: `python::numpy_io` for numpy arrays).
#[derive(Debug)]
pub enum Gather<'b> {
    /// The buffers lie back to back, suitably aligned, inside one shared
    /// region: the tensor is these bytes of it, handed over in place.
    InPlace {
        region: &'b SharedRegion,
        bytes: &'b [u8],
    },
    /// Copied buffer by buffer, in order, into memory of the destination's.
    Copy(Vec<&'b [u8]>),
}

/// Plans the assembly of one tensor from `buffers` (in order), whose
/// elements are `align` bytes wide: in place when every buffer lies in the
/// same shared region, each one right after the previous one, and the
/// first starts on an element boundary (one buffer that is all there is
/// qualifies); a copy otherwise (borrowed host memory is always copied).
/// Device memory is refused.
pub fn plan_gather<'b>(buffers: &[&'b TensorBuffer<'_>], align: usize) -> Result<Gather<'b>> {
    let mut copies = Vec::with_capacity(buffers.len());
    for b in buffers {
        copies.push(b.host()?);
    }
    let total: usize = copies.iter().map(|c| c.len()).sum();
    let Some(region) = buffers.first().and_then(|b| b.region()) else {
        return Ok(Gather::Copy(copies));
    };
    let same_region = buffers
        .iter()
        .all(|b| b.region().is_some_and(|r| r.same_as(region)));
    let start = copies[0].as_ptr() as usize;
    let mut at = start;
    let mut back_to_back = true;
    for c in &copies {
        back_to_back &= c.as_ptr() as usize == at;
        at += c.len();
    }
    let aligned = start.is_multiple_of(align.max(1));
    match region.range(start, total) {
        Some(bytes) if same_region && back_to_back && aligned && total > 0 => {
            Ok(Gather::InPlace { region, bytes })
        }
        _ => Ok(Gather::Copy(copies)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::shared::tests::region_of;

    #[test]
    fn device_memory_is_refused_with_one_message() {
        let b = TensorBuffer::device(1, 16);
        assert_eq!(b.len(), 16);
        assert_eq!(b.kind(), MemoryKind::Device { id: 1 });
        let e = b.host().unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::Unsupported);
        assert!(e.message.contains("GPU memory (device 1)"), "{}", e.message);
        assert!(plan_gather(&[&b], 4).is_err());
        let kind = MemoryKind::from_triton(MEMORY_GPU, 3);
        assert_eq!(kind, MemoryKind::Device { id: 3 });
        assert_eq!(kind.require_host().unwrap_err().message, {
            let d = TensorBuffer::device(3, 0);
            d.host().unwrap_err().message
        });
        assert!(MemoryKind::from_triton(MEMORY_CPU_PINNED, 0).is_host());
        assert_eq!(kind.to_triton(), (MEMORY_GPU, 3));
        assert_eq!(MemoryKind::HostOwned.to_triton(), (MEMORY_CPU, 0));
    }

    #[test]
    fn host_memory_is_copied_whatever_its_owner() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let (a, b) = data.split_at(4);
        let bufs = [TensorBuffer::borrowed(a), TensorBuffer::owned(b)];
        let refs: Vec<&TensorBuffer<'_>> = bufs.iter().collect();
        // Back to back, but lent memory is never handed over in place.
        match plan_gather(&refs, 4).unwrap() {
            Gather::Copy(runs) => assert_eq!(runs, vec![a, b]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn buffers_back_to_back_in_one_region_are_handed_over_in_place() {
        let region = region_of(vec![0u8; 64]);
        let bytes = region.bytes();
        let one = TensorBuffer::shared(&bytes[8..16], region.clone());
        let two = TensorBuffer::shared(&bytes[16..24], region.clone());
        assert_eq!(one.kind(), MemoryKind::SharedRegion);
        match plan_gather(&[&one, &two], 8).unwrap() {
            Gather::InPlace { bytes: got, .. } => {
                assert_eq!(got.as_ptr(), bytes[8..].as_ptr());
                assert_eq!(got.len(), 16);
            }
            other => panic!("{other:?}"),
        }
        // One buffer that is all there is.
        assert!(matches!(
            plan_gather(&[&one], 8).unwrap(),
            Gather::InPlace { .. }
        ));
        // A gap, a misaligned start or another region: copied.
        let gap = TensorBuffer::shared(&bytes[32..40], region.clone());
        assert!(matches!(
            plan_gather(&[&one, &gap], 8).unwrap(),
            Gather::Copy(_)
        ));
        let odd = TensorBuffer::shared(&bytes[9..17], region.clone());
        assert!(matches!(plan_gather(&[&odd], 8).unwrap(), Gather::Copy(_)));
        let other = region_of(vec![0u8; 64]);
        let elsewhere = TensorBuffer::shared(&other.bytes()[0..8], other.clone());
        assert!(matches!(
            plan_gather(&[&two, &elsewhere], 1).unwrap(),
            Gather::Copy(_)
        ));
        // Bytes outside the region are not shared memory at all.
        let outside = [0u8; 8];
        assert_eq!(
            TensorBuffer::shared(&outside, region.clone()).kind(),
            MemoryKind::HostBorrowed
        );
        // Nothing to hand over.
        let empty = TensorBuffer::shared(&bytes[0..0], region.clone());
        assert!(matches!(
            plan_gather(&[&empty], 1).unwrap(),
            Gather::Copy(_)
        ));
    }
}

//! Shared memory whose bytes may reach Python in place: the contract
//! ([`SharedMemory`], an unsafe trait: numpy relies on it for memory safety)
//! and the handle a buffer in such memory carries ([`SharedRegion`]). Today
//! the only such memory is a process-isolated worker's mapping of its input
//! region (`isolation::sys::Mapping`).
//!
//! `unsafe` is allowed here for the trait's declaration only; this module
//! has no unsafe block.

#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::any::Any;
use std::sync::Arc;

/// Memory Python may view in place instead of copying.
///
/// # Safety
/// `view_bytes` returns the same slice on every call, and those bytes stay
/// mapped, readable and writable, at that address for as long as the value
/// lives (moving the value does not move them). numpy views of them may be
/// written (pb_utils inputs are writable).
pub unsafe trait SharedMemory: Send + Sync {
    fn view_bytes(&self) -> &[u8];

    /// Copies `bytes` in at `offset`, for whoever holds that range by
    /// protocol; false when out of bounds or the memory takes no writes.
    fn write(&self, _offset: usize, _bytes: &[u8]) -> bool {
        false
    }
}

/// A shared region as the buffers in it carry it: its memory, and its
/// owner, which whoever hands the bytes over in place keeps alive with them
/// (a numpy view's base object holds both). The worker learns from its
/// owner's reference count whether Python kept views of a batch.
#[derive(Clone)]
pub struct SharedRegion {
    memory: Arc<dyn SharedMemory>,
    owner: Arc<dyn Any + Send + Sync>,
}

impl SharedRegion {
    pub fn new(memory: Arc<dyn SharedMemory>, owner: Arc<dyn Any + Send + Sync>) -> Self {
        SharedRegion { memory, owner }
    }

    /// The whole region.
    pub fn bytes(&self) -> &[u8] {
        self.memory.view_bytes()
    }

    /// Whether `bytes` lie inside the region.
    pub fn contains(&self, bytes: &[u8]) -> bool {
        let start = bytes.as_ptr() as usize;
        self.offset(start, bytes.len()).is_some()
    }

    /// Whether both handles name the same memory.
    pub fn same_as(&self, other: &SharedRegion) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.memory), Arc::as_ptr(&other.memory))
    }

    /// The `len` bytes of the region at address `start`, if they lie inside.
    pub fn range(&self, start: usize, len: usize) -> Option<&[u8]> {
        let at = self.offset(start, len)?;
        self.bytes().get(at..at + len)
    }

    /// What keeps the region's owner alive (the base of a view holds it).
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.owner
    }

    fn offset(&self, start: usize, len: usize) -> Option<usize> {
        let region = self.bytes();
        let base = region.as_ptr() as usize;
        let at = start.checked_sub(base)?;
        (at.checked_add(len)? <= region.len()).then_some(at)
    }
}

impl std::fmt::Debug for SharedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedRegion({} bytes)", self.bytes().len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Heap memory standing in for a mapping (a boxed slice never moves).
    struct Heap(Box<[u8]>);

    // SAFETY: the boxed slice stays at its address, readable and writable,
    // until the value is dropped.
    unsafe impl SharedMemory for Heap {
        fn view_bytes(&self) -> &[u8] {
            &self.0
        }
    }

    pub(crate) fn region_of(data: Vec<u8>) -> SharedRegion {
        SharedRegion::new(Arc::new(Heap(data.into_boxed_slice())), Arc::new(()))
    }

    #[test]
    fn ranges_are_found_by_address_and_bounded_by_the_region() {
        let region = region_of(vec![7u8; 32]);
        let bytes = region.bytes();
        assert!(region.contains(&bytes[4..12]));
        assert!(region.contains(&bytes[32..]));
        let start = bytes[4..].as_ptr() as usize;
        assert_eq!(
            region.range(start, 8).unwrap().as_ptr(),
            bytes[4..].as_ptr()
        );
        assert!(region.range(start, 29).is_none());
        assert!(region.range(start - 8, 1).is_none());
        assert!(!region.contains(&[0u8; 4]));
        assert!(region.same_as(&region.clone()));
        assert!(!region.same_as(&region_of(vec![0u8; 32])));
    }
}

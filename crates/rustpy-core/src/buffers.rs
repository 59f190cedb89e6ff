//! Large byte buffers kept for reuse. A fresh buffer of many MiB costs a
//! page fault (and the kernel's zeroing) per 4 KiB page on first write,
//! about as much again as the copy into it; a BLS round trip of a large
//! tensor allocates two per call (the request's copy of the input, the
//! response's output buffer). Buffers of at least [`MIN_POOLED`] bytes go
//! back here when their owner is done, and the next one of the same size
//! reuses them, already mapped.
//!
//! At most [`MAX_POOLED_BYTES`] are kept (the oldest go first), so the
//! process holds that much more memory at worst; smaller buffers are left
//! to the allocator, which reuses them well.

use std::sync::Mutex;

/// Buffers smaller than this are not kept.
pub const MIN_POOLED: usize = 1 << 20;
/// The most bytes kept for reuse at once.
pub const MAX_POOLED_BYTES: usize = 128 << 20;

/// Kept buffers, oldest first; each has `len() == capacity()`.
static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn free_list() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    FREE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A copy of `bytes`, into a kept buffer when one fits.
pub fn copy_of(bytes: &[u8]) -> Vec<u8> {
    match take(bytes.len()) {
        Some(mut buffer) => {
            buffer.copy_from_slice(bytes);
            buffer
        }
        None => bytes.to_vec(),
    }
}

/// A buffer of exactly `len` bytes for the caller to overwrite entirely:
/// a kept one (old contents) when one fits, else a zeroed new one.
pub fn for_overwrite(len: usize) -> Vec<u8> {
    take(len).unwrap_or_else(|| vec![0; len])
}

/// A kept buffer of exactly `len` bytes, zeroed (what another model will
/// write into must not show what the buffer held before), if there is one.
pub fn take_zeroed(len: usize) -> Option<Vec<u8>> {
    let mut buffer = take(len)?;
    buffer.fill(0);
    Some(buffer)
}

/// A kept buffer of exactly `len` bytes (old contents), if there is one.
fn take(len: usize) -> Option<Vec<u8>> {
    if len < MIN_POOLED {
        return None;
    }
    let mut free = free_list();
    let at = free.iter().rposition(|b| b.len() == len)?;
    Some(free.remove(at))
}

/// Gives a buffer back for reuse (or frees it: too small, or over the cap
/// once the oldest are dropped).
pub fn give(mut buffer: Vec<u8>) {
    if buffer.len() < MIN_POOLED || buffer.len() > MAX_POOLED_BYTES {
        return;
    }
    // Only len() is ever reused: keep no spare capacity around.
    buffer.shrink_to_fit();
    let dropped = {
        let mut free = free_list();
        free.push(buffer);
        let mut total: usize = free.iter().map(Vec::len).sum();
        let mut dropped = Vec::new();
        while total > MAX_POOLED_BYTES {
            let oldest = free.remove(0);
            total -= oldest.len();
            dropped.push(oldest);
        }
        dropped
    };
    // Freed outside the lock (munmap of a large buffer takes a while).
    drop(dropped);
}

/// Bytes kept right now.
pub fn kept_bytes() -> usize {
    free_list().iter().map(Vec::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the pool is process-wide.
    #[test]
    fn large_buffers_are_reused_by_size_and_the_cap_drops_the_oldest() {
        assert!(take(MIN_POOLED).is_none());
        let a = vec![7u8; MIN_POOLED];
        let at = a.as_ptr();
        give(a);
        assert_eq!(kept_bytes(), MIN_POOLED);
        // Another size does not take it; the same size gets the same memory.
        assert!(take(MIN_POOLED + 1).is_none());
        let again = take_zeroed(MIN_POOLED).unwrap();
        assert_eq!((again.as_ptr(), again.len()), (at, MIN_POOLED));
        assert!(again.iter().all(|&b| b == 0), "a reused buffer is zeroed");
        assert_eq!(kept_bytes(), 0);
        give(again);
        let copied = copy_of(&vec![9u8; MIN_POOLED]);
        assert_eq!((copied.as_ptr(), copied[MIN_POOLED - 1]), (at, 9));
        // Small ones are left to the allocator.
        give(vec![0u8; MIN_POOLED - 1]);
        assert_eq!(kept_bytes(), 0);
        // Over the cap, the oldest go.
        let big = MAX_POOLED_BYTES / 2;
        let first = vec![1u8; big];
        let first_at = first.as_ptr();
        give(first);
        give(vec![2u8; big]);
        give(vec![3u8; big]);
        assert_eq!(kept_bytes(), 2 * big);
        let kept: Vec<u8> = [take(big).unwrap(), take(big).unwrap()]
            .iter()
            .map(|b| b[0])
            .collect();
        assert_eq!(kept, [3, 2]);
        assert!(take(big).is_none(), "{first_at:?} was dropped");
        drop(copied);
    }
}

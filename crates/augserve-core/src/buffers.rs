//! Recycled batch buffers. A batch of 256 float16 224x224 images is 77 MB; a fresh
//! allocation that large is mapped anew by the allocator each time, and writing it costs
//! one page fault per 4 KiB, each page zeroed by the kernel first: about a fifth of the CPU
//! batch stage. Buffers given back here are handed out again instead.

use std::sync::Mutex;

/// At most this many buffers wait for reuse (a batch in flight needs two: the resized
/// images and the output tensor).
const KEEP: usize = 4;

/// A small pool of byte buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A buffer of `len` bytes whose contents are unspecified (left from an earlier use, or
    /// zero): the caller overwrites every byte.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut free| {
            // The smallest that fits, so a large buffer stays for a large request.
            let (i, _) = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())?;
            Some(free.swap_remove(i))
        });
        match reused {
            Some(mut buf) => {
                // Shrinking keeps the bytes; growing within the capacity zeroes only the
                // new tail.
                buf.resize(len, 0);
                buf
            }
            None => vec![0u8; len],
        }
    }

    /// Drops every buffer kept for reuse.
    pub fn clear(&self) {
        if let Ok(mut free) = self.free.lock() {
            free.clear();
        }
    }

    /// Bytes kept for reuse now.
    pub fn kept_bytes(&self) -> usize {
        self.free
            .lock()
            .map_or(0, |free| free.iter().map(Vec::capacity).sum())
    }

    /// Gives a buffer back for reuse; dropped when the pool is full or it is empty.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < KEEP {
                free.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let pool = BufferPool::default();
        let a = pool.take(1000);
        assert_eq!(a.len(), 1000);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(600);
        assert_eq!((b.len(), b.as_ptr()), (600, ptr));
        pool.give(b);
        // Too small for the request: a new buffer, the small one stays.
        let c = pool.take(5000);
        assert_eq!(c.len(), 5000);
        assert_ne!(c.as_ptr(), ptr);
        for _ in 0..10 {
            pool.give(vec![1u8; 10]);
        }
        assert!(pool.free.lock().unwrap().len() <= KEEP);
        pool.give(Vec::new());
        assert!(pool.kept_bytes() > 0);
        pool.clear();
        assert_eq!(pool.kept_bytes(), 0);
    }
}

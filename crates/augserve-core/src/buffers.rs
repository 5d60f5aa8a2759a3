//! Recycled buffers. A batch of 256 float16 224x224 images is 77 MB; a fresh allocation
//! that large is mapped anew by the allocator each time, and writing it costs one page fault
//! per 4 KiB, each page zeroed by the kernel first: about a fifth of the CPU batch stage.
//! Buffers given back here are handed out again instead. [`BufferPool`]: a backend's batch
//! buffers; [`take_read_buffer`] / [`recycle_read_buffer`]: encoded files' bytes, read by the
//! per-image workers and freed by the batch stage.

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
            // The smallest that fits, so a large buffer stays for a large request; none over
            // twice the size, so an epoch's short last batch gets its own buffer instead of
            // shrinking a full one (which the next full batch would then zero again).
            let (i, _) = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len && b.capacity() / 2 <= len)
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

/// Size classes of read buffers: class `k` holds buffers of capacity exactly `2^k` bytes.
const READ_CLASSES: usize = 25;
/// The largest read buffer kept: 16 MiB (class 24). Larger files read into fresh memory.
const MAX_READ_CLASS: usize = READ_CLASSES - 1;
/// At most this many bytes (capacity) of read buffers wait for reuse, process-wide: the
/// encoded files of about three batches of 256 large photos in flight.
pub const MAX_KEPT_READ_BYTES: usize = 256 << 20;

/// Read buffers by size class, and the capacity they hold.
struct ReadBuffers {
    classes: Mutex<([Vec<Vec<u8>>; READ_CLASSES], usize)>,
}

static READ_BUFFERS: ReadBuffers = ReadBuffers::new();

/// The class whose buffers hold `len` bytes: `ceil(log2(len))`.
fn read_class(len: usize) -> usize {
    len.max(1).next_power_of_two().trailing_zeros() as usize
}

impl ReadBuffers {
    const fn new() -> Self {
        ReadBuffers {
            classes: Mutex::new(([const { Vec::new() }; READ_CLASSES], 0)),
        }
    }

    fn take(&self, len: usize) -> Vec<u8> {
        let class = read_class(len);
        if class > MAX_READ_CLASS {
            return Vec::with_capacity(len);
        }
        let reused = self.classes.lock().ok().and_then(|mut pool| {
            let buf = pool.0[class].pop()?;
            pool.1 -= buf.capacity();
            Some(buf)
        });
        reused.unwrap_or_else(|| Vec::with_capacity(1 << class))
    }

    fn give(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !cap.is_power_of_two() || read_class(cap) > MAX_READ_CLASS {
            return;
        }
        buf.clear();
        if let Ok(mut pool) = self.classes.lock() {
            if pool.1 + cap <= MAX_KEPT_READ_BYTES {
                pool.1 += cap;
                pool.0[read_class(cap)].push(buf);
            }
        }
    }

    fn kept(&self) -> usize {
        self.classes.lock().map_or(0, |pool| pool.1)
    }

    fn clear(&self) {
        if let Ok(mut pool) = self.classes.lock() {
            pool.0.iter_mut().for_each(Vec::clear);
            pool.1 = 0;
        }
    }
}

/// An empty buffer with room for `len` bytes, for reading a file: one given back earlier
/// ([`recycle_read_buffer`]) when one of its size class waits, so reading costs no page
/// faults (faulting in fresh read buffers was a sixth of the GPU path's host time per large
/// photo). Capacities are powers of two, so a buffer serves any file of its class.
pub fn take_read_buffer(len: usize) -> Vec<u8> {
    READ_BUFFERS.take(len)
}

/// Gives a file's bytes back once nothing reads them; kept while the pool holds under
/// [`MAX_KEPT_READ_BYTES`], else freed.
pub fn recycle_read_buffer(buf: Vec<u8>) {
    READ_BUFFERS.give(buf);
}

/// Frees every read buffer waiting for reuse (the server's last stream ended).
pub fn release_read_buffers() {
    READ_BUFFERS.clear();
}

/// Bytes (capacity) of read buffers waiting for reuse now.
pub fn kept_read_bytes() -> usize {
    READ_BUFFERS.kept()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffers_come_back_by_size_class_up_to_the_bound() {
        let pool = ReadBuffers::new();
        let mut a = pool.take(170_000);
        assert_eq!((a.len(), a.capacity()), (0, 1 << 18));
        a.extend_from_slice(&[7; 1000]);
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.kept(), 1 << 18);
        // Any length of the class gets it back, empty.
        let b = pool.take(200_000);
        assert_eq!((b.len(), b.as_ptr()), (0, ptr));
        assert_eq!(pool.kept(), 0);
        // Another class does not.
        let c = pool.take(100_000);
        assert_eq!(c.capacity(), 1 << 17);
        // Not a pooled size (a caller's own Vec): dropped, never handed out.
        pool.give(Vec::with_capacity(1000));
        assert_eq!(pool.kept(), 0);
        // Past the largest class: a fresh buffer of exactly the size, not kept.
        let huge = pool.take(40 << 20);
        assert_eq!(huge.capacity(), 40 << 20);
        pool.give(huge);
        assert_eq!(pool.kept(), 0);
        // Kept up to the bound, the rest freed.
        for _ in 0..(MAX_KEPT_READ_BYTES >> 24) + 3 {
            pool.give(Vec::with_capacity(16 << 20));
        }
        assert_eq!(pool.kept(), MAX_KEPT_READ_BYTES);
        pool.clear();
        assert_eq!(pool.kept(), 0);
        drop((b, c));
    }

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

//! Recycled buffers. A batch of 256 float16 224x224 images is 77 MB; a fresh allocation
//! that large is mapped anew by the allocator each time, and writing it costs one page fault
//! per 4 KiB, each page zeroed by the kernel first: about a fifth of the CPU batch stage.
//! Buffers given back here are handed out again instead. [`BufferPool`]: a backend's batch
//! buffers; [`take_read_buffer`] / [`recycle_read_buffer`]: encoded files' bytes, read by the
//! per-image workers and freed by the batch stage; [`OutputSlots`]: tensor buffers a front
//! hands on, registered with the batch ops so a GPU downloads into them directly.

use std::sync::{Arc, Condvar, Mutex};

use crate::pipeline::{BatchOps, HostOutputRegistration};

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

    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.take_as_left(len);
        buf.clear();
        buf
    }

    /// A buffer with room for `len` bytes, holding what it held when given back.
    fn take_as_left(&self, len: usize) -> Vec<u8> {
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

    fn give(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if !cap.is_power_of_two() || read_class(cap) > MAX_READ_CLASS {
            return;
        }
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

/// A buffer of exactly `len` bytes whose contents are unspecified (left from an earlier use,
/// or zero), from the same pool as [`take_read_buffer`]: for output the caller overwrites
/// whole, such as an image the per-image stage resizes. A buffer given back at that length
/// is not zeroed again (zeroing a fresh 150 KB image was 2 % of the CPU path's time per
/// ImageNet-size image).
pub fn take_buffer_to_overwrite(len: usize) -> Vec<u8> {
    let mut buf = READ_BUFFERS.take_as_left(len);
    // Shrinking keeps the bytes; growing zeroes only the new tail.
    buf.resize(len, 0);
    buf
}

/// Gives a file's bytes (or a resized image's) back once nothing reads them; kept while the
/// pool holds under [`MAX_KEPT_READ_BYTES`], else freed.
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

/// Host memory for batch tensors that a front hands on (the inline gRPC transport, `augserve
/// run`): `count` buffers of `bytes` each, registered with the batch ops once
/// ([`BatchOps::register_host_output`]), so a GPU downloads each batch straight into one
/// instead of into pinned staging memory and then out again, the largest host cost of a
/// GPU-decoded batch. Each buffer is lent to one batch at a time ([`OutputSlots::take`]).
pub struct OutputSlots {
    /// Dropped before `free` (declaration order): each registration ends while its buffer is
    /// still allocated. A lent buffer keeps this alive through its `Arc`.
    _registrations: Vec<HostOutputRegistration>,
    free: Mutex<Vec<AlignedBuffer>>,
    returned: Condvar,
    bytes: usize,
    count: usize,
}

/// A buffer whose usable part starts on a page boundary (what `cuMemHostRegister` pins).
struct AlignedBuffer {
    memory: Vec<u8>,
    start: usize,
}

const PAGE: usize = 4096;

impl AlignedBuffer {
    fn new(bytes: usize) -> Self {
        let memory = vec![0u8; bytes + PAGE];
        let start = memory.as_ptr().align_offset(PAGE).min(PAGE);
        AlignedBuffer { memory, start }
    }

    fn usable(&mut self, bytes: usize) -> &mut [u8] {
        &mut self.memory[self.start..self.start + bytes]
    }
}

impl OutputSlots {
    /// `count` buffers of `bytes`, each registered with `ops` (where it registers nothing,
    /// the CPU or a device that refused, batches are copied into them as before).
    pub fn new(ops: &dyn BatchOps, count: usize, bytes: usize) -> Arc<Self> {
        let mut buffers: Vec<AlignedBuffer> = (0..count.max(1))
            .map(|_| AlignedBuffer::new(bytes))
            .collect();
        let registrations = buffers
            .iter_mut()
            .filter_map(|b| {
                let usable = b.usable(bytes);
                // SAFETY: the buffer is allocated by this `OutputSlots` and never freed or
                // moved before it is dropped, after the registrations (field order); a lent
                // buffer holds the `Arc`, so it comes back first.
                unsafe { ops.register_host_output(usable.as_mut_ptr(), usable.len()) }
            })
            .collect();
        Arc::new(OutputSlots {
            _registrations: registrations,
            free: Mutex::new(buffers),
            returned: Condvar::new(),
            bytes,
            count: count.max(1),
        })
    }

    /// The size of each buffer.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many buffers there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// A free buffer, waiting for one to come back while all are lent; `None` once
    /// `give_up()` says so while waiting.
    pub fn take(self: &Arc<Self>, give_up: &dyn Fn() -> bool) -> Option<OutputSlot> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(buffer) = free.pop() {
                return Some(OutputSlot {
                    buffer: Some(buffer),
                    len: 0,
                    slots: self.clone(),
                });
            }
            if give_up() {
                return None;
            }
            free = self
                .returned
                .wait_timeout(free, std::time::Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// One buffer of [`OutputSlots`], lent to one batch: the batch ops write the tensor into
/// [`OutputSlot::buffer`], the front reads it back as bytes (`AsRef<[u8]>`, a gRPC
/// message's `Bytes` owner), and dropping it gives the buffer back.
pub struct OutputSlot {
    buffer: Option<AlignedBuffer>,
    len: usize,
    slots: Arc<OutputSlots>,
}

impl OutputSlot {
    /// The whole buffer, for [`crate::Destination::Host`].
    pub fn buffer(&mut self) -> &mut [u8] {
        let bytes = self.slots.bytes;
        match &mut self.buffer {
            Some(b) => b.usable(bytes),
            None => &mut [],
        }
    }

    /// Says how many of its bytes the batch wrote (what `as_ref` then shows).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.slots.bytes);
    }
}

impl AsRef<[u8]> for OutputSlot {
    fn as_ref(&self) -> &[u8] {
        match &self.buffer {
            Some(b) => &b.memory[b.start..b.start + self.len],
            None => &[],
        }
    }
}

impl Drop for OutputSlot {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let mut free = self.slots.free.lock().unwrap_or_else(|p| p.into_inner());
            free.push(b);
            self.slots.returned.notify_one();
        }
    }
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
        // Given back at a length, a buffer to overwrite comes back at it unzeroed.
        let mut d = b;
        d.resize(150_528, 9);
        pool.give(d);
        let d = pool.take_as_left(150_528);
        assert_eq!((d.len(), d.as_ptr(), d[150_527]), (150_528, ptr, 9));
        pool.give(d);
        // As a read buffer, the same one comes back empty.
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

    #[test]
    fn output_slots_lend_page_aligned_buffers_and_wait_for_one_back() {
        let ops = crate::pipeline::CpuBatchOps::default();
        let slots = OutputSlots::new(&ops, 2, 10_000);
        let mut a = slots.take(&|| false).unwrap();
        assert_eq!(a.buffer().len(), 10_000);
        assert_eq!(a.buffer().as_ptr() as usize % PAGE, 0);
        a.buffer()[..3].copy_from_slice(&[1, 2, 3]);
        a.set_len(3);
        assert_eq!(a.as_ref(), &[1, 2, 3]);
        let b = slots.take(&|| false).unwrap();
        // Both lent: a third waits, and gives up when told to.
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let give_up = || asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 1;
        assert!(slots.take(&give_up).is_none());
        let ptr = a.buffer().as_ptr();
        drop(a);
        let mut c = slots.take(&|| false).unwrap();
        assert_eq!(
            c.buffer().as_ptr(),
            ptr,
            "the buffer given back is lent again"
        );
        // A waiting taker wakes when one comes back.
        let waiter = {
            let slots = slots.clone();
            std::thread::spawn(move || slots.take(&|| false).is_some())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(b);
        assert!(waiter.join().unwrap());
        drop(c);
    }
}

//! Batch memory under a budget. Two bounds:
//!
//! - Per stream, [`InFlight`]: at most `prefetch + in_flight` batches exist at once (in_flight:
//!   those the batch ops make at once, 1 on the CPU), counted from the moment the producer
//!   starts one until tonic asks for the batch after it (hyper asks only once h2 has nearly
//!   sent the previous one). So a stream holds its queued batches and those being made, not
//!   more.
//! - Server-wide, [`BatchMemory`]: a stream reserves its worst case (those batches, plus the
//!   copy tonic encodes a message into) before it starts; beyond `max_batch_memory_bytes` it
//!   is refused with RESOURCE_EXHAUSTED instead of growing the process towards an OOM kill.
//!
//! When the last reservation ends, `on_idle` runs: pooled buffers go back to the OS.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::names;
use crate::ServerError;

/// Budget accounting unit: permits are KiB, so a u32 count covers terabytes.
const UNIT: u64 = 1024;

/// The server-wide budget for batch memory.
pub struct BatchMemory {
    permits: Arc<Semaphore>,
    total_bytes: u64,
    on_idle: Box<dyn Fn() + Send + Sync>,
}

/// Batch memory a stream (or request) holds; given back on drop.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    memory: Arc<BatchMemory>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // The permit itself is returned after this body; count it as returned already.
        let units = self.bytes.div_ceil(UNIT) as usize;
        let free = self.memory.permits.available_permits() + units;
        let reserved = self.memory.total_units().saturating_sub(free) as u64 * UNIT;
        metrics::gauge!(names::BATCH_MEMORY_RESERVED_BYTES).set(reserved as f64);
        if free >= self.memory.total_units() {
            (self.memory.on_idle)();
        }
    }
}

impl BatchMemory {
    /// A budget of `total_bytes`; `on_idle` runs whenever the last reservation ends.
    pub fn new(total_bytes: u64, on_idle: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(BatchMemory {
            permits: Arc::new(Semaphore::new(
                (total_bytes / UNIT).min(Semaphore::MAX_PERMITS as u64) as usize,
            )),
            total_bytes,
            on_idle: Box::new(on_idle),
        })
    }

    fn total_units(&self) -> usize {
        (self.total_bytes / UNIT).min(Semaphore::MAX_PERMITS as u64) as usize
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes reserved now.
    pub fn reserved_bytes(&self) -> u64 {
        (self.total_units() - self.permits.available_permits()) as u64 * UNIT
    }

    /// Reserves `bytes` for `what`, waiting up to `wait` for other streams to end.
    pub async fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        wait: Duration,
        what: &str,
    ) -> Result<Reservation, ServerError> {
        let units = bytes.div_ceil(UNIT);
        if units > self.total_units() as u64 {
            return Err(ServerError::ResourceExhausted(format!(
                "{what} needs {bytes} bytes of batch memory, over the whole max_batch_memory_bytes \
                 ({}): ask for a smaller batch, fewer prefetched batches or fewer slots",
                self.total_bytes
            )));
        }
        let acquire = self.permits.clone().acquire_many_owned(units as u32);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => {
                metrics::gauge!(names::BATCH_MEMORY_RESERVED_BYTES)
                    .set(self.reserved_bytes() as f64);
                Ok(Reservation {
                    _permit: permit,
                    bytes,
                    memory: self.clone(),
                })
            }
            _ => Err(ServerError::ResourceExhausted(format!(
                "{what} needs {bytes} bytes of batch memory; {} of max_batch_memory_bytes ({}) \
                 are held by other streams: try again when one ends",
                self.reserved_bytes(),
                self.total_bytes
            ))),
        }
    }
}

/// Makes glibc's malloc use one arena for every thread, unless `MALLOC_ARENA_MAX` says
/// otherwise. Call it first thing, before threads start. Why: freed memory coalesces into the
/// top chunk of the arena it came from, and `malloc_trim` returns the top chunk of the main
/// arena only, so the batches of many streams, freed by as many threads, stayed resident in
/// their threads' arenas after the streams ended (60-100 MiB after 8 streams of 37 MiB
/// batches; with one arena, the RSS went back to idle). Small allocations stay lock-free in
/// each thread's tcache; large ones are a few per image.
pub fn use_one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's tuning; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Keeps memory the decoders free for their next image instead of handing it back to the
/// kernel at once. With glibc's defaults a block of 128 KiB and more is mapped and unmapped per
/// call (the threshold then follows the largest block freed, up to 32 MiB), and a free top of
/// the heap over twice that is trimmed; libjpeg-turbo allocates a progressive file's
/// coefficient arrays (0.6 MB for an ImageNet-size file, about 5 MB for a large photo) for each
/// image, so every image's arrays were faulted in and zeroed afresh: 8 page faults per image
/// over the ImageNet-size corpus, 0.1 with these settings, and 2-4 % more images per second
/// on one core (two series of 4 interleaved pairs on the 2-core VM). What is kept is what the next image takes
/// again, so the peak of a one-job process is unchanged (`augserve run`, `bench`; the server
/// keeps glibc's defaults, under which its streams' batch buffers are mapped and unmapped
/// whole). `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or glibc's malloc tunables
/// override. Call it first thing, before threads start.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = |var: &str| {
            std::env::var_os(var).is_some()
                || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."))
        };
        if !tuned("MALLOC_MMAP_THRESHOLD_") {
            // SAFETY: mallopt only changes the allocator's tuning; called before other threads.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) };
        }
        if !tuned("MALLOC_TRIM_THRESHOLD_") {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) };
        }
    }
}

/// The default budget: half the memory this process may use (the machine's, or its cgroup's
/// limit when lower, as in a container), 4 GiB when neither can be read.
pub fn default_batch_memory_bytes() -> u64 {
    memory_limit_bytes().map_or(4 << 30, |m| m / 2)
}

/// The lower of MemTotal and the cgroup (v2, else v1) memory limit.
pub fn memory_limit_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// The per-stream bound: how many of a stream's batches may exist at once.
pub struct InFlight {
    count: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// One batch in flight; dropping it lets the producer start another.
pub struct InFlightToken(Arc<InFlight>);

impl Drop for InFlightToken {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.count.lock() {
            *n = n.saturating_sub(1);
            self.0.freed.notify_one();
        }
    }
}

impl InFlight {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(InFlight {
            count: Mutex::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        })
    }

    /// Waits for room for one more batch; `None` once `give_up` says so (the client left, the
    /// server stops).
    pub fn acquire(self: &Arc<Self>, give_up: impl Fn() -> bool) -> Option<InFlightToken> {
        let mut n = self.count.lock().ok()?;
        while *n >= self.max {
            if give_up() {
                return None;
            }
            n = self
                .freed
                .wait_timeout(n, Duration::from_millis(50))
                .ok()?
                .0;
        }
        *n += 1;
        Some(InFlightToken(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn reservations_stay_within_the_budget_and_idle_runs_at_the_end() {
        let idle = Arc::new(AtomicUsize::new(0));
        let seen = idle.clone();
        let m = BatchMemory::new(10 << 20, move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let wait = Duration::from_millis(20);
        let a = m.reserve(6 << 20, wait, "stream a").await.unwrap();
        let e = m.reserve(6 << 20, wait, "stream b").await.err().unwrap();
        assert!(e.to_string().contains("max_batch_memory_bytes"), "{e}");
        let e = m.reserve(11 << 20, wait, "stream c").await.err().unwrap();
        assert!(e.to_string().contains("over the whole"), "{e}");
        let b = m.reserve(4 << 20, wait, "stream d").await.unwrap();
        assert_eq!(m.reserved_bytes(), 10 << 20);
        drop(a);
        assert_eq!(
            idle.load(Ordering::SeqCst),
            0,
            "a stream still holds memory"
        );
        drop(b);
        assert_eq!(idle.load(Ordering::SeqCst), 1);
        assert_eq!(m.reserved_bytes(), 0);
    }

    #[test]
    fn in_flight_blocks_at_its_bound() {
        let f = InFlight::new(2);
        let a = f.acquire(|| false).unwrap();
        let _b = f.acquire(|| false).unwrap();
        assert!(
            f.acquire(|| true).is_none(),
            "a third batch while two are in flight"
        );
        drop(a);
        assert!(f.acquire(|| true).is_some());
    }

    #[test]
    fn the_default_budget_is_half_the_memory() {
        let limit = memory_limit_bytes().unwrap();
        assert_eq!(default_batch_memory_bytes(), limit / 2);
    }
}

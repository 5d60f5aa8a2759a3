//! Shared-memory delivery (Transport SHM): a ring of fixed-size slots in a file under
//! `shm_dir` (tmpfs), mode 0600. The producer writes a batch's tensor into a free slot and
//! sends a `SlotRef` instead of the bytes; the client maps the file read-only, views the
//! slot, and hands it back with `ReleaseSlots`. A slot is only rewritten after its release,
//! so the ring never overwrites unread data and memory stays at `slots * slot_bytes`.
//!
//! Lifetime: the producer thread owns the ring; when the stream ends (finished, cancelled,
//! or the client died holding slots) the ring drops and its file is unlinked. The registry
//! keeps only weak references, so a release for a finished stream is simply NOT_FOUND.
//! Files of a server that was killed are removed by the next server's start-up sweep.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use memmap2::MmapRaw;

use crate::ServerError;

/// File names: `augserve-<server pid>-<stream id>`; the pid lets a later server sweep files
/// whose server is gone.
const PREFIX: &str = "augserve-";

struct RingState {
    /// Slots ready to be written, oldest release first.
    free: std::collections::VecDeque<u32>,
    /// The generation each slot was last written with, 0 when free.
    out: Vec<u64>,
    next_generation: u64,
}

/// Which slots of a stream's ring are free, and which generation each out slot carries;
/// shared by the SHM ring and the CUDA IPC device ring.
pub struct SlotBook {
    id: String,
    slots: u32,
    state: Mutex<RingState>,
    freed: Condvar,
}

impl SlotBook {
    fn new(id: String, slots: u32) -> Self {
        SlotBook {
            id,
            slots,
            state: Mutex::new(RingState {
                free: (0..slots).collect(),
                out: vec![0; slots as usize],
                next_generation: 1,
            }),
            freed: Condvar::new(),
        }
    }

    /// The stream id (names the ring in `ReleaseSlots`).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots currently out with the client.
    pub fn outstanding(&self) -> usize {
        self.lock().out.iter().filter(|&&g| g != 0).count()
    }

    /// Waits for a free slot and marks it out with a new generation: `(slot, generation)`.
    /// `None` when `give_up()` says so while waiting (the client left, shutdown).
    pub fn acquire(&self, give_up: impl Fn() -> bool) -> Option<(u32, u64)> {
        let mut st = self.lock();
        let slot = loop {
            if let Some(s) = st.free.pop_front() {
                break s;
            }
            if give_up() {
                return None;
            }
            st = self
                .freed
                .wait_timeout(st, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        };
        let generation = st.next_generation;
        st.next_generation += 1;
        st.out[slot as usize] = generation;
        Some((slot, generation))
    }

    /// `acquire`, as a lease: dropped without [`BookLease::keep`], the slot is free again.
    pub fn lease(&self, give_up: impl Fn() -> bool) -> Option<BookLease<'_>> {
        let (slot, generation) = self.acquire(give_up)?;
        Some(BookLease {
            book: self,
            slot,
            generation,
            kept: false,
        })
    }

    /// Frees `slot` if it is out with `generation`; false for anything else (already released,
    /// never sent, or a stale generation), which changes nothing.
    pub fn release(&self, slot: u32, generation: u64) -> bool {
        let mut st = self.lock();
        match st.out.get_mut(slot as usize) {
            Some(g) if *g == generation && generation != 0 => {
                *g = 0;
                st.free.push_back(slot);
                drop(st);
                self.freed.notify_all();
                true
            }
            _ => false,
        }
    }
}

/// A slot taken from a [`SlotBook`] for one batch; freed on drop unless kept (announced to
/// the client, which releases it).
pub struct BookLease<'b> {
    book: &'b SlotBook,
    slot: u32,
    generation: u64,
    kept: bool,
}

impl BookLease<'_> {
    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The batch went into the slot: it stays out until the client releases it.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for BookLease<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.book.release(self.slot, self.generation);
        }
    }
}

/// One SHM stream's ring of slots in a shared-memory file.
pub struct ShmRing {
    book: Arc<SlotBook>,
    path: PathBuf,
    map: MmapRaw,
    slot_bytes: usize,
}

/// Where one batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotWrite {
    pub slot: u32,
    pub generation: u64,
    pub offset: u64,
    pub length: u64,
}

impl ShmRing {
    /// Creates `dir/augserve-<pid>-<id>` (0600, never an existing file) sized for `slots`
    /// slots of `slot_bytes`, and maps it.
    fn create(dir: &Path, id: String, slots: u32, slot_bytes: usize) -> std::io::Result<Self> {
        let path = dir.join(format!("{PREFIX}{}-{id}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let len = slot_bytes.max(1) as u64 * u64::from(slots);
        let mapped = file.set_len(len).and_then(|()| MmapRaw::map_raw(&file));
        let map = match mapped {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok(ShmRing {
            book: Arc::new(SlotBook::new(id, slots)),
            path,
            map,
            slot_bytes: slot_bytes.max(1),
        })
    }

    pub fn id(&self) -> &str {
        self.book.id()
    }

    pub fn book(&self) -> &Arc<SlotBook> {
        &self.book
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// The whole mapping, for registering it with the device: its start and length. Valid as
    /// long as the ring lives.
    pub fn mapping(&self) -> (*mut u8, usize) {
        (self.map.as_mut_ptr(), self.map.len())
    }

    pub fn slots(&self) -> u32 {
        self.book.slots()
    }

    /// Slots currently out with the client.
    pub fn outstanding(&self) -> usize {
        self.book.outstanding()
    }

    pub fn release(&self, slot: u32, generation: u64) -> bool {
        self.book.release(slot, generation)
    }

    /// Waits for a free slot, copies `data` into it and marks it out with a new generation.
    /// Returns `None` when `data` is larger than a slot, or when `give_up()` says so while
    /// waiting (the client left, shutdown).
    pub fn write(&self, data: &[u8], give_up: impl Fn() -> bool) -> Option<SlotWrite> {
        if data.len() > self.slot_bytes {
            return None;
        }
        let filled = self.fill(give_up, |buf| {
            buf[..data.len()].copy_from_slice(data);
            Ok::<_, std::convert::Infallible>(((), data.len()))
        })?;
        filled.ok().map(|((), w)| w)
    }

    /// Waits for a free slot and lets `fill` write the batch straight into it (no copy):
    /// `fill` gets the whole slot and returns its result and the bytes it wrote. On success
    /// the slot is out with a new generation, as after `write`; when `fill` fails it is free
    /// again. `None` when `give_up()` says so while waiting.
    pub fn fill<T, E>(
        &self,
        give_up: impl Fn() -> bool,
        fill: impl FnOnce(&mut [u8]) -> Result<(T, usize), E>,
    ) -> Option<Result<(T, SlotWrite), E>> {
        Some(self.lease(give_up)?.fill(fill))
    }

    /// Waits for a free slot and takes it for one batch, to be written later
    /// ([`SlotLease::fill`], on another thread, say): a stream takes its slots in batch order
    /// while batches are made concurrently. A lease dropped unfilled frees its slot.
    pub fn lease(&self, give_up: impl Fn() -> bool) -> Option<SlotLease<'_>> {
        Some(SlotLease {
            ring: self,
            lease: self.book.lease(give_up)?,
        })
    }
}

/// A free slot of an [`ShmRing`] taken for one batch.
pub struct SlotLease<'r> {
    ring: &'r ShmRing,
    lease: BookLease<'r>,
}

impl SlotLease<'_> {
    /// `ShmRing::fill` into this slot.
    pub fn fill<T, E>(
        self,
        fill: impl FnOnce(&mut [u8]) -> Result<(T, usize), E>,
    ) -> Result<(T, SlotWrite), E> {
        let ring = self.ring;
        let (slot, generation) = (self.lease.slot(), self.lease.generation());
        let offset = slot as usize * ring.slot_bytes;
        // SAFETY: the slot lies inside the mapping (`slot < slots`, `slots * slot_bytes` is
        // its length), and this is the only reference to it in this process: the book handed
        // the free slot to this lease alone, and it is not announced (so not released, not
        // acquired again) before `fill` returns. The client has released the slot, so it is
        // not read through this process either. A misbehaving client may still read its own
        // read-only mapping meanwhile and see the new bytes: its contract violation, not
        // memory unsafety here.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(ring.map.as_mut_ptr().add(offset), ring.slot_bytes)
        };
        // A failed fill drops the lease, which frees the slot.
        let (value, length) = fill(buf)?;
        self.lease.keep();
        Ok((
            value,
            SlotWrite {
                slot,
                generation,
                offset: offset as u64,
                length: length.min(ring.slot_bytes) as u64,
            },
        ))
    }
}

impl Drop for ShmRing {
    fn drop(&mut self) {
        // The client's mapping (if any) stays valid until it unmaps; the name goes now.
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a shared-memory ring");
        }
    }
}

/// The server's rings by stream id (weak: a ring lives as long as its stream).
#[derive(Default)]
pub struct ShmRegistry {
    dir: Option<PathBuf>,
    rings: Mutex<HashMap<String, Weak<SlotBook>>>,
}

/// 128 random bits as hex: the stream id, which also authorises `ReleaseSlots`.
fn random_id() -> Result<String, ServerError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| ServerError::Config(format!("no randomness for a stream id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl ShmRegistry {
    /// `dir` None or empty disables SHM. Sweeps rings left by servers that no longer run.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.filter(|d| !d.as_os_str().is_empty());
        if let Some(d) = &dir {
            sweep_stale(d);
        }
        ShmRegistry {
            dir,
            rings: Mutex::new(HashMap::new()),
        }
    }

    /// Why SHM cannot be used at all, if so.
    pub fn unavailable(&self) -> Option<String> {
        match &self.dir {
            None => Some("shm_dir is not set".into()),
            Some(d) if !d.is_dir() => Some(format!("shm_dir {} is not a folder", d.display())),
            Some(_) => None,
        }
    }

    /// Creates and registers a ring.
    pub fn create(&self, slots: u32, slot_bytes: usize) -> Result<Arc<ShmRing>, String> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| "shm_dir is not set".to_string())?;
        let id = random_id().map_err(|e| e.to_string())?;
        let ring = ShmRing::create(dir, id.clone(), slots, slot_bytes)
            .map(Arc::new)
            .map_err(|e| format!("cannot create a ring in {}: {e}", dir.display()))?;
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings.retain(|_, w| w.strong_count() > 0);
        rings.insert(id, Arc::downgrade(ring.book()));
        Ok(ring)
    }

    /// Registers the slot book of a device (CUDA IPC) ring of `slots` slots.
    pub fn create_book(&self, slots: u32) -> Result<Arc<SlotBook>, String> {
        let id = random_id().map_err(|e| e.to_string())?;
        let book = Arc::new(SlotBook::new(id.clone(), slots));
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings.retain(|_, w| w.strong_count() > 0);
        rings.insert(id, Arc::downgrade(&book));
        Ok(book)
    }

    /// The live ring of stream `id`.
    pub fn get(&self, id: &str) -> Option<Arc<SlotBook>> {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings.retain(|_, w| w.strong_count() > 0);
        rings.get(id).and_then(Weak::upgrade)
    }

    /// Live rings (for tests and metrics).
    pub fn live(&self) -> usize {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings.retain(|_, w| w.strong_count() > 0);
        rings.len()
    }
}

/// Removes `augserve-<pid>-*` files whose server process is gone (killed before its rings
/// could drop). Files of running servers, and anything else, are left alone.
fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(path = %e.path().display(), "removed a stale shared-memory ring")
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "stale ring not removed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cycle_only_after_release_and_the_file_goes_with_the_ring() {
        let d = tempfile::tempdir().unwrap();
        let reg = ShmRegistry::new(Some(d.path().to_path_buf()));
        let ring = reg.create(2, 8).unwrap();
        let path = ring.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let a = ring.write(b"aaaa", || false).unwrap();
        let b = ring.write(b"bbbbbbbb", || false).unwrap();
        assert_ne!(a.slot, b.slot);
        // Full: a third write waits until give_up.
        assert!(ring.write(b"c", || true).is_none());
        assert!(!ring.release(a.slot, a.generation + 7), "stale generation");
        assert!(ring.release(a.slot, a.generation));
        assert!(!ring.release(a.slot, a.generation), "double release");
        let c = ring.write(b"cc", || false).unwrap();
        assert_eq!(c.slot, a.slot);
        assert!(c.generation > b.generation);
        assert!(
            ring.write(&[0; 9], || false).is_none(),
            "over the slot size"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[c.offset as usize..][..2], b"cc");
        assert_eq!(&bytes[b.offset as usize..][..8], b"bbbbbbbb");
        assert_eq!(ring.outstanding(), 2);
        assert!(reg.get(ring.id()).is_some());
        let id = ring.id().to_string();
        drop(ring);
        assert!(!path.exists());
        assert!(reg.get(&id).is_none());
        assert_eq!(reg.live(), 0);
    }

    #[test]
    fn fill_writes_in_place_and_frees_the_slot_when_it_fails() {
        let d = tempfile::tempdir().unwrap();
        let reg = ShmRegistry::new(Some(d.path().to_path_buf()));
        let ring = reg.create(2, 8).unwrap();
        // A failing fill leaves no slot out.
        let failed = ring.fill(|| false, |_| Err::<((), usize), &str>("batch failed"));
        assert_eq!(failed.map(|r| r.err()), Some(Some("batch failed")));
        assert_eq!(ring.outstanding(), 0);
        let (value, w) = ring
            .fill(
                || false,
                |buf| {
                    assert_eq!(buf.len(), 8, "the whole slot");
                    buf[..5].copy_from_slice(b"hello");
                    Ok::<_, ()>(("made", 5))
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!((value, w.length), ("made", 5));
        assert_eq!(ring.outstanding(), 1);
        let file = std::fs::read(ring.path()).unwrap();
        assert_eq!(&file[w.offset as usize..][..5], b"hello");
        // The other slot, then full: a third fill waits until give_up.
        assert!(ring.fill(|| false, |_| Ok::<_, ()>(((), 0))).is_some());
        assert!(ring.fill(|| true, |_| Ok::<_, ()>(((), 0))).is_none());
        assert!(ring.release(w.slot, w.generation));
    }

    #[test]
    fn stale_rings_of_dead_servers_are_swept() {
        let d = tempfile::tempdir().unwrap();
        // No process has pid 999999999 (over pid_max); files without our prefix are not ours.
        std::fs::write(d.path().join("augserve-999999999-abc"), b"x").unwrap();
        std::fs::write(d.path().join("someone-else"), b"x").unwrap();
        let mine = d
            .path()
            .join(format!("augserve-{}-live", std::process::id()));
        std::fs::write(&mine, b"x").unwrap();
        let _ = ShmRegistry::new(Some(d.path().to_path_buf()));
        assert!(!d.path().join("augserve-999999999-abc").exists());
        assert!(d.path().join("someone-else").exists());
        assert!(mine.exists());
    }
}

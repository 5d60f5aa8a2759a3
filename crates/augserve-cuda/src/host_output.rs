//! Host output memory the device writes into directly: a shared-memory ring the server owns
//! for a stream's whole life is page-locked and mapped for the device (`cuMemHostRegister`),
//! so a batch is downloaded straight into its slot instead of into pinned staging memory and
//! then copied (the host's largest remaining cost per batch, host-overhead-profile.md).
//!
//! Only memory whose lifetime the caller vouches for is registered (the unsafe contract of
//! `BatchOps::register_host_output`): a recycled `Vec` could be freed while still registered,
//! and a later allocation at that address would then be written through the old pages.

use std::sync::{Arc, Mutex};

use cudarc::driver::CudaContext;

/// The host ranges registered now, as (start address, length).
#[derive(Default)]
pub(crate) struct RegisteredRanges(Mutex<Vec<(usize, usize)>>);

impl RegisteredRanges {
    /// Whether `buf` lies wholly inside one registered range.
    pub(crate) fn contains(&self, buf: &[u8]) -> bool {
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        self.lock()
            .iter()
            .any(|&(s, len)| s <= start && end <= s + len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, usize)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, start: usize, len: usize) {
        self.lock().push((start, len));
    }

    fn remove(&self, start: usize, len: usize) {
        let mut ranges = self.lock();
        if let Some(i) = ranges.iter().position(|&r| r == (start, len)) {
            ranges.swap_remove(i);
        }
    }
}

/// One registered range; dropping it unregisters it (before the caller unmaps the memory).
pub(crate) struct HostRegistration {
    /// The context it was registered in; `None` on the stand-in, which registers nothing.
    ctx: Option<Arc<CudaContext>>,
    start: usize,
    len: usize,
    ranges: Arc<RegisteredRanges>,
}

impl HostRegistration {
    /// Page-locks `start..start + len` for the device of `ctx` (`None`: the stand-in, which
    /// only records the range). Errors are the driver's: memory it cannot lock (a limit on
    /// locked memory, a mapping type it refuses).
    ///
    /// # Safety
    /// The range must be mapped, writable memory that stays mapped until the registration
    /// is dropped.
    pub(crate) unsafe fn new(
        ctx: Option<Arc<CudaContext>>,
        start: *mut u8,
        len: usize,
        ranges: Arc<RegisteredRanges>,
    ) -> Result<Self, cudarc::driver::DriverError> {
        if let Some(ctx) = &ctx {
            ctx.bind_to_thread()?;
            // SAFETY: the caller guarantees the range is mapped and stays so until `drop`,
            // which unregisters it; PORTABLE: every context may use it, as with pinned
            // allocations.
            unsafe {
                cudarc::driver::sys::cuMemHostRegister_v2(
                    start.cast(),
                    len,
                    cudarc::driver::sys::CU_MEMHOSTREGISTER_PORTABLE,
                )
            }
            .result()?;
        }
        ranges.add(start as usize, len);
        Ok(HostRegistration {
            ctx,
            start: start as usize,
            len,
            ranges,
        })
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        // Out of the list first: no batch starts a download into it after this.
        self.ranges.remove(self.start, self.len);
        if let Some(ctx) = &self.ctx {
            let r = ctx.bind_to_thread().and_then(|()| {
                // SAFETY: registered in `new` at this address and not unregistered since;
                // batches synchronise their stream before returning, so no copy into it is
                // in flight.
                unsafe { cudarc::driver::sys::cuMemHostUnregister(self.start as *mut _) }.result()
            });
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not unregister a host output range");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_counts_as_registered_only_inside_a_live_range() {
        let ranges = Arc::new(RegisteredRanges::default());
        let mut memory = vec![0u8; 1000];
        let (start, len) = (memory.as_mut_ptr(), memory.len());
        // SAFETY: no context: nothing is registered with a driver, the range is only recorded.
        let reg = unsafe { HostRegistration::new(None, start, len, ranges.clone()) }.unwrap();
        assert!(ranges.contains(&memory[100..600]));
        assert!(ranges.contains(&memory[..]));
        let other = vec![0u8; 10];
        assert!(!ranges.contains(&other));
        drop(reg);
        assert!(!ranges.contains(&memory[100..600]));
    }
}

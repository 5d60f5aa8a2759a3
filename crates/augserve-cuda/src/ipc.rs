//! Device rings for the CUDA IPC transport: output memory that a trainer process on the same
//! GPU maps with `cuIpcOpenMemHandle` (CuPy's `ipcOpenMemHandle`, torch), so a batch never
//! leaves the device.
//!
//! The ring is one `cuMemAlloc` allocation (IPC handles cannot be taken of stream-ordered
//! pool allocations, which cudarc's `alloc` may use), freed when the ring drops; batches are
//! copied into a slot device-to-device on the batch's stream, which is synchronised before
//! the slot reference is sent. Checked on an H200 (tests/gpu.rs, clients/python/tests/test_cuda_ipc.py).

use std::sync::Arc;

use augserve_core::DeviceOutput;
use cudarc::driver::sys::{CUdeviceptr, CUipcMemHandle};
use cudarc::driver::{result, CudaContext, CudaStream};

use crate::device::GpuDevice;
use crate::GpuError;

pub struct IpcRing {
    ctx: Arc<CudaContext>,
    ptr: CUdeviceptr,
    slot_bytes: usize,
    slots: u32,
    handle: [u8; 64],
    ordinal: i32,
}

// SAFETY: the ring is a device address plus plain data; every use binds the owning context
// first, and the CUDA driver API is thread safe.
unsafe impl Send for IpcRing {}
// SAFETY: as above; no interior mutability on the host side.
unsafe impl Sync for IpcRing {}

impl IpcRing {
    /// Allocates `slots * slot_bytes` bytes on `device` and exports their IPC handle.
    pub fn new(device: &GpuDevice, slots: u32, slot_bytes: usize) -> Result<Self, GpuError> {
        let bytes = slot_bytes.max(1) * slots.max(1) as usize;
        device.ctx.bind_to_thread()?;
        // SAFETY: the context is bound to this thread; the pointer is owned by the ring and
        // freed exactly once, in Drop.
        let ptr = unsafe { result::malloc_sync(bytes) }.map_err(|e| GpuError::alloc(e, bytes))?;
        let mut h = std::mem::MaybeUninit::<CUipcMemHandle>::zeroed();
        // SAFETY: `h` is a valid out-pointer for one handle; `ptr` is a live cuMemAlloc base.
        let r = unsafe { cudarc::driver::sys::cuIpcGetMemHandle(h.as_mut_ptr(), ptr) }.result();
        if let Err(e) = r {
            // SAFETY: allocated above and not shared yet.
            let _ = unsafe { result::free_sync(ptr) };
            return Err(GpuError::Driver(e));
        }
        // SAFETY: initialised by cuIpcGetMemHandle (it returned success).
        let h = unsafe { h.assume_init() };
        let handle: [u8; 64] = h.reserved.map(|c| c as u8);
        Ok(IpcRing {
            ctx: device.ctx.clone(),
            ptr,
            slot_bytes: slot_bytes.max(1),
            slots: slots.max(1),
            handle,
            ordinal: device.info.ordinal as i32,
        })
    }

    /// Enqueues a device-to-device copy of `len` bytes from `src` into slot `slot` on
    /// `stream`. The caller synchronises the stream before telling anyone about the slot.
    pub(crate) fn copy_into(
        &self,
        stream: &CudaStream,
        src: CUdeviceptr,
        len: usize,
        slot: u32,
    ) -> Result<(), GpuError> {
        if slot >= self.slots || len > self.slot_bytes {
            return Err(GpuError::Internal(format!(
                "slot {slot} of {} / {len} bytes over the slot size {}",
                self.slots, self.slot_bytes
            )));
        }
        let dst = self.ptr + (slot as usize * self.slot_bytes) as CUdeviceptr;
        // SAFETY: `dst..dst+len` lies inside this ring's allocation (checked above) and `src`
        // is a live device buffer of at least `len` bytes owned by the caller's batch slot;
        // both belong to the stream's context.
        unsafe { result::memcpy_dtod_async(dst, src, len, stream.cu_stream()) }?;
        Ok(())
    }
}

impl IpcRing {
    /// Copies `len` bytes of slot `slot` back to the host (checks and diagnostics; the point
    /// of the ring is that trainers read it on the device).
    pub fn read_slot(&self, slot: u32, len: usize) -> Result<Vec<u8>, GpuError> {
        if slot >= self.slots || len > self.slot_bytes {
            return Err(GpuError::Internal(format!(
                "slot {slot} / {len} bytes out of range"
            )));
        }
        self.ctx.bind_to_thread()?;
        let mut out = vec![0u8; len];
        let src = self.ptr + (slot as usize * self.slot_bytes) as CUdeviceptr;
        // SAFETY: `src..src+len` is inside the allocation (checked); `out` has `len` bytes; the
        // context is bound; the synchronous copy completes before returning.
        unsafe { result::memcpy_dtoh_sync(&mut out, src) }?;
        Ok(out)
    }
}

impl Drop for IpcRing {
    fn drop(&mut self) {
        // A trainer that still has the memory mapped keeps it alive until it closes the handle.
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_sync in `new`, freed once here.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

impl DeviceOutput for IpcRing {
    /// The CUDA IPC memory handle of the whole ring.
    fn handle(&self) -> Vec<u8> {
        self.handle.to_vec()
    }
    fn device_ordinal(&self) -> i32 {
        self.ordinal
    }
    fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }
    fn slots(&self) -> u32 {
        self.slots
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

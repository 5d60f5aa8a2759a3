//! nvJPEG, loaded at run time (dlopen through libloading, like cudarc loads libcuda): the
//! binary builds and runs without it, and `NvJpeg::load` says why it is unavailable. Only the
//! functions the batched decoder uses are bound; every call goes through `check`.
//!
//! `GpuJpegDecoder::decode_into` decodes a batch straight into the caller's device buffer as
//! interleaved RGB (the layout the resize kernels read), with the hardware engine where the
//! GPU has one (A100/H100/H200) and the CUDA backend elsewhere. Images `gpu_decode::route`
//! sends to the CPU never reach it. Checked on an H200 (tests/gpu.rs).

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use cudarc::driver::sys::CUstream;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};

use crate::device::GpuDevice;
use crate::gpu_decode::NvJpegBackend;
use crate::GpuError;

type Status = c_int;
type Handle = *mut c_void;
type State = *mut c_void;

const NVJPEG_BACKEND_DEFAULT: c_int = 0;
const NVJPEG_BACKEND_HARDWARE: c_int = 3;
const NVJPEG_OUTPUT_RGBI: c_int = 5;
const NVJPEG_MAX_COMPONENT: usize = 4;

/// nvjpegImage_t: one destination image (interleaved RGB uses channel 0 only).
#[repr(C)]
#[derive(Clone, Copy)]
struct NvJpegImage {
    channel: [*mut u8; NVJPEG_MAX_COMPONENT],
    pitch: [usize; NVJPEG_MAX_COMPONENT],
}

type CreateEx =
    unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> Status;
type Destroy = unsafe extern "C" fn(Handle) -> Status;
type StateCreate = unsafe extern "C" fn(Handle, *mut State) -> Status;
type StateDestroy = unsafe extern "C" fn(State) -> Status;
type BatchedInitialize = unsafe extern "C" fn(Handle, State, c_int, c_int, c_int) -> Status;
type DecodeBatched = unsafe extern "C" fn(
    Handle,
    State,
    *const *const u8,
    *const usize,
    *mut NvJpegImage,
    CUstream,
) -> Status;

/// The library and the functions we use (valid while `_lib` lives).
pub struct NvJpeg {
    create_ex: CreateEx,
    destroy: Destroy,
    state_create: StateCreate,
    state_destroy: StateDestroy,
    batched_initialize: BatchedInitialize,
    decode_batched: DecodeBatched,
    /// Which file was loaded.
    pub library: String,
    _lib: libloading::Library,
}

/// nvjpegStatus_t names.
fn status_name(s: Status) -> String {
    let name = match s {
        1 => "NOT_INITIALIZED",
        2 => "INVALID_PARAMETER",
        3 => "BAD_JPEG",
        4 => "JPEG_NOT_SUPPORTED",
        5 => "ALLOCATOR_FAILURE",
        6 => "EXECUTION_FAILED",
        7 => "ARCH_MISMATCH",
        8 => "INTERNAL_ERROR",
        9 => "IMPLEMENTATION_NOT_SUPPORTED",
        10 => "INCOMPLETE_BITSTREAM",
        _ => return format!("status {s}"),
    };
    name.to_string()
}

fn check(call: &'static str, s: Status) -> Result<(), GpuError> {
    if s == 0 {
        Ok(())
    } else {
        Err(GpuError::NvJpeg {
            call,
            status: status_name(s),
        })
    }
}

/// File names tried, newest CUDA first (CUDA 13 and 12 runtimes; the unversioned dev link).
pub const LIBRARY_NAMES: &[&str] = &["libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"];

impl NvJpeg {
    /// Loads nvJPEG, or says why not (never panics without it).
    pub fn load() -> Result<Arc<Self>, GpuError> {
        let mut tried = Vec::new();
        for name in LIBRARY_NAMES {
            // SAFETY: loading nvJPEG runs its initialisers, which only set up its own state.
            match unsafe { libloading::Library::new(*name) } {
                Ok(lib) => return Self::bind(lib, name).map(Arc::new),
                Err(e) => tried.push(format!("{name}: {e}")),
            }
        }
        Err(GpuError::NoNvJpeg(format!(
            "libnvjpeg not found ({}); install the CUDA runtime or `pip install nvidia-nvjpeg-cu12` and add its lib folder to LD_LIBRARY_PATH",
            tried.join("; ")
        )))
    }

    fn bind(lib: libloading::Library, name: &str) -> Result<Self, GpuError> {
        fn get<T: Copy>(lib: &libloading::Library, sym: &str) -> Result<T, GpuError> {
            // SAFETY: each symbol is looked up with the C signature nvjpeg.h declares for it.
            unsafe { lib.get::<T>(sym.as_bytes()) }
                .map(|f| *f)
                .map_err(|e| GpuError::NoNvJpeg(format!("{sym}: {e}")))
        }
        Ok(NvJpeg {
            create_ex: get(&lib, "nvjpegCreateEx")?,
            destroy: get(&lib, "nvjpegDestroy")?,
            state_create: get(&lib, "nvjpegJpegStateCreate")?,
            state_destroy: get(&lib, "nvjpegJpegStateDestroy")?,
            batched_initialize: get(&lib, "nvjpegDecodeBatchedInitialize")?,
            decode_batched: get(&lib, "nvjpegDecodeBatched")?,
            library: name.to_string(),
            _lib: lib,
        })
    }
}

/// A batch decoded on the device: interleaved RGB images back to back in `buffer`.
pub struct DecodedBatch {
    pub buffer: CudaSlice<u8>,
    /// Per image: byte offset in `buffer`, width, height.
    pub images: Vec<(usize, u32, u32)>,
}

/// A batched nvJPEG decoder on one device and stream.
pub struct GpuJpegDecoder {
    nv: Arc<NvJpeg>,
    handle: Handle,
    state: State,
    backend: NvJpegBackend,
    stream: Arc<CudaStream>,
    initialized_for: usize,
}

// SAFETY: the handle and state are used by one thread at a time (methods take &mut self);
// nvJPEG handles may move between threads.
unsafe impl Send for GpuJpegDecoder {}

impl GpuJpegDecoder {
    /// A decoder on `device`: the hardware engine if asked for and present, else CUDA.
    pub fn new(
        nv: Arc<NvJpeg>,
        device: &GpuDevice,
        prefer: NvJpegBackend,
    ) -> Result<Self, GpuError> {
        device.ctx.bind_to_thread()?;
        let stream = device.ctx.new_stream()?;
        let mut handle: Handle = std::ptr::null_mut();
        let mut backend = prefer;
        // SAFETY: out-pointer to a handle; null allocators select nvJPEG's defaults.
        let mut s = unsafe {
            (nv.create_ex)(
                if prefer == NvJpegBackend::Hardware {
                    NVJPEG_BACKEND_HARDWARE
                } else {
                    NVJPEG_BACKEND_DEFAULT
                },
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
                &mut handle,
            )
        };
        if s != 0 && prefer == NvJpegBackend::Hardware {
            // No hardware engine on this GPU (e.g. not A100/H100): the CUDA backend.
            backend = NvJpegBackend::Cuda;
            // SAFETY: as above.
            s = unsafe {
                (nv.create_ex)(
                    NVJPEG_BACKEND_DEFAULT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                    &mut handle,
                )
            };
        }
        check("nvjpegCreateEx", s)?;
        let mut state: State = std::ptr::null_mut();
        // SAFETY: `handle` is live; out-pointer to a state.
        if let Err(e) = check("nvjpegJpegStateCreate", unsafe {
            (nv.state_create)(handle, &mut state)
        }) {
            // SAFETY: created above, destroyed once.
            unsafe { (nv.destroy)(handle) };
            return Err(e);
        }
        Ok(GpuJpegDecoder {
            nv,
            handle,
            state,
            backend,
            stream,
            initialized_for: 0,
        })
    }

    pub fn backend(&self) -> NvJpegBackend {
        self.backend
    }

    /// The nvJPEG file in use.
    pub fn library(&self) -> &str {
        &self.nv.library
    }

    /// Decodes `jpegs` (sizes from their headers: `dims`) into one device buffer, RGB
    /// interleaved. Fails as a whole if nvJPEG refuses the batch; the caller then decodes
    /// those images on the CPU (per-image fallback).
    pub fn decode_batch(
        &mut self,
        jpegs: &[&[u8]],
        dims: &[(u32, u32)],
    ) -> Result<DecodedBatch, GpuError> {
        let mut images = Vec::with_capacity(dims.len());
        let mut total = 0usize;
        for &(w, h) in dims {
            images.push((total, w, h));
            total += w as usize * h as usize * 3;
        }
        // SAFETY: u8 needs no initialisation before nvJPEG writes every pixel.
        let mut buffer = unsafe { self.stream.alloc::<u8>(total.max(1)) }
            .map_err(|e| GpuError::alloc(e, total))?;
        let offsets: Vec<usize> = images.iter().map(|&(o, _, _)| o).collect();
        self.decode_into(jpegs, dims, &mut buffer, &offsets)?;
        Ok(DecodedBatch { buffer, images })
    }

    /// Decodes `jpegs` into `dst`, image k as interleaved RGB (pitch width*3) at byte
    /// `offsets[k]`, and waits for it. `dims` are the headers' sizes; every image must fit.
    pub fn decode_into(
        &mut self,
        jpegs: &[&[u8]],
        dims: &[(u32, u32)],
        dst: &mut CudaSlice<u8>,
        offsets: &[usize],
    ) -> Result<(), GpuError> {
        let n = jpegs.len();
        let bad = |status: String| GpuError::NvJpeg {
            call: "decode_into",
            status,
        };
        if n == 0 || dims.len() != n || offsets.len() != n {
            return Err(bad(format!(
                "{n} images, {} sizes, {} offsets",
                dims.len(),
                offsets.len()
            )));
        }
        for (&(w, h), &off) in dims.iter().zip(offsets) {
            if off + w as usize * h as usize * 3 > dst.len() {
                return Err(bad(format!("a {w}x{h} image at {off} overruns the buffer")));
            }
        }
        if self.initialized_for != n {
            // SAFETY: live handle and state; batch size n, no CPU threads of nvJPEG's own.
            check("nvjpegDecodeBatchedInitialize", unsafe {
                (self.nv.batched_initialize)(
                    self.handle,
                    self.state,
                    n as c_int,
                    1,
                    NVJPEG_OUTPUT_RGBI,
                )
            })?;
            self.initialized_for = n;
        }
        let stream = self.stream.clone();
        {
            let (base, _sync) = dst.device_ptr_mut(&stream);
            let mut dest: Vec<NvJpegImage> = dims
                .iter()
                .zip(offsets)
                .map(|(&(w, _), &off)| NvJpegImage {
                    channel: [
                        (base + off as u64) as *mut u8,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    ],
                    pitch: [w as usize * 3, 0, 0, 0],
                })
                .collect();
            let data: Vec<*const u8> = jpegs.iter().map(|j| j.as_ptr()).collect();
            let lengths: Vec<usize> = jpegs.iter().map(|j| j.len()).collect();
            // SAFETY: `data`/`lengths` describe `n` live host buffers; each destination points
            // at w*h*3 bytes inside `dst` (checked above, sizes from the headers nvJPEG also
            // reads); the stream belongs to this device's context. nvJPEG copies what it needs
            // from the host buffers before returning.
            let status = unsafe {
                (self.nv.decode_batched)(
                    self.handle,
                    self.state,
                    data.as_ptr(),
                    lengths.as_ptr(),
                    dest.as_mut_ptr(),
                    stream.cu_stream(),
                )
            };
            if status != 0 {
                // A failed batch can leave the batched state half set up: initialise again.
                self.initialized_for = 0;
            }
            check("nvjpegDecodeBatched", status)?;
        }
        stream.synchronize()?;
        Ok(())
    }
}

impl GpuJpegDecoder {
    /// Copies image `k` of a decoded batch back to the host (checks only: the pipeline keeps
    /// decoded images on the device).
    pub fn download(&self, batch: &DecodedBatch, k: usize) -> Result<Vec<u8>, GpuError> {
        let (off, w, h) = batch.images[k];
        let len = w as usize * h as usize * 3;
        Ok(self
            .stream
            .clone_dtoh(&batch.buffer.slice(off..off + len))?)
    }
}

impl Drop for GpuJpegDecoder {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once, state before handle.
        unsafe {
            (self.nv.state_destroy)(self.state);
            (self.nv.destroy)(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_without_nvjpeg_reports_instead_of_panicking() {
        match NvJpeg::load() {
            Ok(nv) => assert!(nv.library.starts_with("libnvjpeg")),
            Err(e) => {
                let m = e.to_string();
                assert!(m.starts_with("GPU JPEG decoding unavailable"), "{m}");
                assert!(m.contains("libnvjpeg.so.12"), "{m}");
            }
        }
        assert_eq!(status_name(4), "JPEG_NOT_SUPPORTED");
        assert_eq!(std::mem::size_of::<NvJpegImage>(), 64);
    }
}

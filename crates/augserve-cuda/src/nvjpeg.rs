//! nvJPEG, loaded at run time (dlopen through libloading, like cudarc loads libcuda): the
//! binary builds and runs without it, and `NvJpeg::load` says why it is unavailable. Only the
//! functions the batched decoder uses are bound; every call goes through `check`.
//!
//! `GpuJpegDecoder::decode_into` decodes a batch straight into the caller's device buffer as
//! interleaved RGB (the layout the resize kernels read), with the hardware engine where the
//! GPU has one (A100/H100/H200) and the CUDA backend elsewhere. nvJPEG is asked for planar
//! YCbCr at the native chroma subsampling (`NVJPEG_OUTPUT_YUV`), and our kernel
//! (kernels/ycbcr.cu) upsamples the chroma and converts to RGB with zune-jpeg's arithmetic:
//! nvJPEG's own RGB output replicates chroma, which put colourful images up to 2.8 levels
//! away from the CPU decoder (measured on an H200; see benches/results/gpu-NVIDIA-H200).
//! Images `gpu_decode::route` sends to the CPU never reach it.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use cudarc::driver::sys::CUstream;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut, PushKernelArg};

use crate::device::GpuDevice;
use crate::gpu_decode::NvJpegBackend;
use crate::kernels::YccDesc;
use crate::launch::{grid, launch, BLOCK};
use crate::GpuError;

type Status = c_int;
type Handle = *mut c_void;
type State = *mut c_void;

const NVJPEG_BACKEND_DEFAULT: c_int = 0;
const NVJPEG_BACKEND_HARDWARE: c_int = 3;
const NVJPEG_OUTPUT_YUV: c_int = 1;
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
type GetImageInfo = unsafe extern "C" fn(
    Handle,
    *const u8,
    usize,
    *mut c_int,
    *mut c_int,
    *mut c_int,
    *mut c_int,
) -> Status;
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
    get_image_info: GetImageInfo,
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
            get_image_info: get(&lib, "nvjpegGetImageInfo")?,
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

/// One image's components and plane sizes as nvJPEG reads them (`nvjpegGetImageInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneInfo {
    pub components: i32,
    pub widths: [i32; NVJPEG_MAX_COMPONENT],
    pub heights: [i32; NVJPEG_MAX_COMPONENT],
}

/// Where one image's planes go in the planar buffer, from byte `at`, and how the conversion
/// kernel reads them (`dst_off` left 0); with the bytes the planes take. `None` for what the
/// kernel does not convert: not 1 or 3 components, Cb and Cr of different sizes, chroma
/// neither full size nor halved (rounding up) in each direction.
pub fn plane_layout(p: &PlaneInfo, at: usize) -> Option<(YccDesc, usize)> {
    let (w, h) = (p.widths[0], p.heights[0]);
    if w <= 0 || h <= 0 {
        return None;
    }
    let luma = w as usize * h as usize;
    let mut d = YccDesc {
        y_off: at as u64,
        width: w,
        height: h,
        y_pitch: w,
        ..YccDesc::default()
    };
    match p.components {
        1 => {
            // Chroma destinations at full size although a grayscale image has none: what
            // nvJPEG might write there for YUV output then stays inside our buffer.
            d.gray = 1;
            d.c_width = w;
            d.c_height = h;
            d.c_pitch = w;
        }
        3 => {
            let (cw, ch) = (p.widths[1], p.heights[1]);
            if (cw, ch) != (p.widths[2], p.heights[2]) {
                return None;
            }
            let shift = |full: i32, part: i32| match part {
                _ if part == full => Some(0),
                _ if part == (full + 1) / 2 => Some(1),
                _ => None,
            };
            d.h_shift = shift(w, cw)?;
            d.v_shift = shift(h, ch)?;
            d.c_width = cw;
            d.c_height = ch;
            d.c_pitch = cw;
        }
        _ => return None,
    }
    let chroma = d.c_width as usize * d.c_height as usize;
    d.cb_off = (at + luma) as u64;
    d.cr_off = (at + luma + chroma) as u64;
    Some((d, luma + 2 * chroma))
}

/// A batched nvJPEG decoder on one device and stream.
pub struct GpuJpegDecoder {
    nv: Arc<NvJpeg>,
    device: Arc<GpuDevice>,
    handle: Handle,
    state: State,
    backend: NvJpegBackend,
    stream: Arc<CudaStream>,
    initialized_for: usize,
    /// nvJPEG's planar output, reused across batches (grown, never shrunk).
    planes: Option<CudaSlice<u8>>,
}

// SAFETY: the handle and state are used by one thread at a time (methods take &mut self);
// nvJPEG handles may move between threads.
unsafe impl Send for GpuJpegDecoder {}

impl GpuJpegDecoder {
    /// A decoder on `device`: the hardware engine if asked for and present, else CUDA.
    pub fn new(
        nv: Arc<NvJpeg>,
        device: &Arc<GpuDevice>,
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
            device: device.clone(),
            handle,
            state,
            backend,
            stream,
            initialized_for: 0,
            planes: None,
        })
    }

    pub fn backend(&self) -> NvJpegBackend {
        self.backend
    }

    /// The nvJPEG file in use.
    pub fn library(&self) -> &str {
        &self.nv.library
    }

    /// Components and plane sizes of `jpeg` as nvJPEG parses them.
    pub fn plane_info(&self, jpeg: &[u8]) -> Result<PlaneInfo, GpuError> {
        let mut p = PlaneInfo {
            components: 0,
            widths: [0; NVJPEG_MAX_COMPONENT],
            heights: [0; NVJPEG_MAX_COMPONENT],
        };
        let mut subsampling: c_int = 0;
        // SAFETY: `jpeg` is a live host buffer of jpeg.len() bytes; the out-pointers are
        // locals, widths/heights arrays of NVJPEG_MAX_COMPONENT ints as nvjpeg.h requires.
        check("nvjpegGetImageInfo", unsafe {
            (self.nv.get_image_info)(
                self.handle,
                jpeg.as_ptr(),
                jpeg.len(),
                &mut p.components,
                &mut subsampling,
                p.widths.as_mut_ptr(),
                p.heights.as_mut_ptr(),
            )
        })?;
        Ok(p)
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
        // SAFETY: u8 needs no initialisation before the conversion writes every pixel.
        let mut buffer = unsafe { self.stream.alloc::<u8>(total.max(1)) }
            .map_err(|e| GpuError::alloc(e, total))?;
        let offsets: Vec<usize> = images.iter().map(|&(o, _, _)| o).collect();
        self.decode_into(jpegs, dims, &mut buffer, &offsets)?;
        Ok(DecodedBatch { buffer, images })
    }

    /// Decodes `jpegs` into `dst`, image k as interleaved RGB (pitch width*3) at byte
    /// `offsets[k]`, and waits for it. `dims` are the headers' sizes; every image must fit.
    /// nvJPEG writes planar YCbCr into a scratch buffer; `ycbcr_to_rgb_u8` converts.
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
        if n == 0 || n > 65535 || dims.len() != n || offsets.len() != n {
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
        // Plane layouts from nvJPEG's own reading of each header, checked against ours.
        let mut descs = Vec::with_capacity(n);
        let mut plane_bytes = 0usize;
        for (k, jpeg) in jpegs.iter().enumerate() {
            let info = self.plane_info(jpeg)?;
            let (mut d, bytes) = plane_layout(&info, plane_bytes)
                .ok_or_else(|| bad(format!("planes {info:?} not converted on the GPU")))?;
            if (d.width as u32, d.height as u32) != dims[k] {
                return Err(bad(format!(
                    "nvJPEG reads {}x{}, the header says {}x{}",
                    d.width, d.height, dims[k].0, dims[k].1
                )));
            }
            d.dst_off = offsets[k] as u64;
            descs.push(d);
            plane_bytes += bytes;
        }
        let stream = self.stream.clone();
        if self.planes.as_ref().is_none_or(|p| p.len() < plane_bytes) {
            self.planes = None; // free the old one first
            let len = plane_bytes + plane_bytes / 4;
            // SAFETY: nvJPEG writes every plane byte the conversion reads.
            self.planes =
                Some(unsafe { stream.alloc::<u8>(len) }.map_err(|e| GpuError::alloc(e, len))?);
        }
        let planes = self
            .planes
            .as_mut()
            .ok_or_else(|| bad("no plane buffer".into()))?;
        if self.initialized_for != n {
            // SAFETY: live handle and state; batch size n, no CPU threads of nvJPEG's own.
            check("nvjpegDecodeBatchedInitialize", unsafe {
                (self.nv.batched_initialize)(
                    self.handle,
                    self.state,
                    n as c_int,
                    1,
                    NVJPEG_OUTPUT_YUV,
                )
            })?;
            self.initialized_for = n;
        }
        {
            let (base, _sync) = planes.device_ptr_mut(&stream);
            let at = |off: u64| (base + off) as *mut u8;
            let mut dest: Vec<NvJpegImage> = descs
                .iter()
                .map(|d| NvJpegImage {
                    channel: [
                        at(d.y_off),
                        at(d.cb_off),
                        at(d.cr_off),
                        std::ptr::null_mut(),
                    ],
                    pitch: [
                        d.y_pitch as usize,
                        d.c_pitch as usize,
                        d.c_pitch as usize,
                        0,
                    ],
                })
                .collect();
            let data: Vec<*const u8> = jpegs.iter().map(|j| j.as_ptr()).collect();
            let lengths: Vec<usize> = jpegs.iter().map(|j| j.len()).collect();
            // SAFETY: `data`/`lengths` describe `n` live host buffers; each image's planes
            // point into `planes` at the sizes nvJPEG itself reported for that image
            // (`plane_layout`, buffer grown to their sum above); the stream belongs to this
            // device's context. nvJPEG copies what it needs from the host buffers before
            // returning.
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
        let descs_dev = stream.clone_htod(&descs)?;
        let most = descs
            .iter()
            .map(|d| d.width as u32 * d.height as u32)
            .max()
            .unwrap_or(1);
        // Grid stride over each image's pixels: up to 128 blocks per image.
        let cfg = grid(most.min(128 * BLOCK), 1, n as u32);
        launch(&stream, &self.device.ycbcr_to_rgb, cfg, |a| {
            a.arg(&*planes).arg(&mut *dst).arg(&descs_dev);
        })?;
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

    fn planes(components: i32, sizes: &[(i32, i32)]) -> PlaneInfo {
        let mut p = PlaneInfo {
            components,
            widths: [0; 4],
            heights: [0; 4],
        };
        for (c, &(w, h)) in sizes.iter().enumerate() {
            p.widths[c] = w;
            p.heights[c] = h;
        }
        p
    }

    #[test]
    fn plane_layouts_follow_the_chroma_subsampling() {
        // 4:2:0 of an odd-sized image: chroma halved, rounding up (what the H200 reported).
        let (d, bytes) =
            plane_layout(&planes(3, &[(375, 499), (188, 250), (188, 250)]), 1000).expect("4:2:0");
        assert_eq!((d.h_shift, d.v_shift, d.gray), (1, 1, 0));
        assert_eq!(
            (d.width, d.height, d.c_width, d.c_height),
            (375, 499, 188, 250)
        );
        assert_eq!((d.y_off, d.cb_off), (1000, 1000 + 375 * 499));
        assert_eq!(d.cr_off, d.cb_off + 188 * 250);
        assert_eq!(bytes, 375 * 499 + 2 * 188 * 250);
        let (d, _) = plane_layout(&planes(3, &[(64, 48), (32, 48), (32, 48)]), 0).expect("4:2:2");
        assert_eq!((d.h_shift, d.v_shift), (1, 0));
        let (d, _) = plane_layout(&planes(3, &[(64, 48), (64, 24), (64, 24)]), 0).expect("4:4:0");
        assert_eq!((d.h_shift, d.v_shift), (0, 1));
        let (d, _) = plane_layout(&planes(3, &[(64, 48), (64, 48), (64, 48)]), 0).expect("4:4:4");
        assert_eq!((d.h_shift, d.v_shift), (0, 0));
        // Grayscale: scratch chroma planes at full size, so nothing nvJPEG writes escapes.
        let (d, bytes) = plane_layout(&planes(1, &[(40, 30)]), 0).expect("gray");
        assert_eq!(d.gray, 1);
        assert_eq!(bytes, 3 * 40 * 30);
        // What the kernel does not convert.
        assert!(plane_layout(&planes(3, &[(64, 48), (16, 48), (16, 48)]), 0).is_none()); // 4:1:1
        assert!(plane_layout(&planes(3, &[(64, 48), (32, 24), (64, 48)]), 0).is_none());
        assert!(plane_layout(&planes(4, &[(64, 48); 4]), 0).is_none());
        assert!(plane_layout(&planes(3, &[(0, 48), (0, 48), (0, 48)]), 0).is_none());
    }
}

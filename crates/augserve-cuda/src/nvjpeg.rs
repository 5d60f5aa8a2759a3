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
//!
//! The signatures, enum values and `nvjpegImage_t` layout below were checked against the
//! `nvjpeg.h` of PyPI's nvidia-nvjpeg-cu12 12.4.0.76 and nvidia-nvjpeg 13.2.3.58 (the same
//! for everything bound here); `tests/cuda_libs.rs` opens both libraries (no GPU needed) and
//! binds every function, the ROI entry points included.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use cudarc::driver::sys::CUstream;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut, PushKernelArg};
use jpeg_encoder::SamplingFactor;

use crate::cuda_libs::{self, CudaLib};
use crate::decode_check::{check_decoder, check_images, test_jpeg, CheckReport};
use crate::device::GpuDevice;
use crate::gpu_decode::NvJpegBackend;
use crate::jpeg_planes::{
    batch_planes, plane_destinations, roi_for_header, PlaneInfo, Roi, RoiSupport, MAX_COMPONENTS,
};
use crate::launch::{grid, launch, BLOCK};
use crate::GpuError;

type Status = c_int;
type Handle = *mut c_void;
type State = *mut c_void;

const NVJPEG_BACKEND_DEFAULT: c_int = 0;
const NVJPEG_BACKEND_HARDWARE: c_int = 3;
const NVJPEG_OUTPUT_YUV: c_int = 1;

/// nvjpegImage_t: one destination image (interleaved RGB uses channel 0 only).
#[repr(C)]
#[derive(Clone, Copy)]
struct NvJpegImage {
    channel: [*mut u8; MAX_COMPONENTS],
    pitch: [usize; MAX_COMPONENTS],
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

/// nvjpegGetProperty(libraryPropertyType, int*): MAJOR_VERSION 0, MINOR_VERSION 1,
/// PATCH_LEVEL 2.
type GetProperty = unsafe extern "C" fn(c_int, *mut c_int) -> Status;

type Params = *mut c_void;
type ParamsCreate = unsafe extern "C" fn(Handle, *mut Params) -> Status;
type ParamsDestroy = unsafe extern "C" fn(Params) -> Status;
type ParamsSetRoi = unsafe extern "C" fn(Params, c_int, c_int, c_int, c_int) -> Status;
type ParamsSetOutputFormat = unsafe extern "C" fn(Params, c_int) -> Status;
type DecodeBatchedEx = unsafe extern "C" fn(
    Handle,
    State,
    *const *const u8,
    *const usize,
    *mut NvJpegImage,
    *mut Params,
    CUstream,
) -> Status;

/// The region-of-interest entry points (nvJPEG 11.6+; batched ROI decode on the hardware
/// engine, as nvImageCodec and DALI use it). Optional: without them every image is decoded
/// whole.
#[derive(Clone, Copy)]
struct RoiApi {
    params_create: ParamsCreate,
    params_destroy: ParamsDestroy,
    params_set_roi: ParamsSetRoi,
    params_set_output_format: ParamsSetOutputFormat,
    decode_batched_ex: DecodeBatchedEx,
}

/// The library and the functions we use (valid while `_lib` lives).
pub struct NvJpeg {
    create_ex: CreateEx,
    destroy: Destroy,
    state_create: StateCreate,
    state_destroy: StateDestroy,
    batched_initialize: BatchedInitialize,
    decode_batched: DecodeBatched,
    get_image_info: GetImageInfo,
    roi: Option<RoiApi>,
    /// Which file was loaded.
    pub library: String,
    /// Its version (major, minor, patch), where it says.
    pub version: Option<(i32, i32, i32)>,
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
    /// Loads nvJPEG, or says why not (never panics without it): the newest the driver runs,
    /// by name through the dynamic loader, else from the CUDA toolkit's folder or a Python
    /// environment's NVIDIA wheels (`cuda_libs::open_first`).
    pub fn load() -> Result<Arc<Self>, GpuError> {
        Self::load_for(cuda_libs::driver_cuda_version())
    }

    /// As `load`, for a driver running CUDA `driver` (major, minor); None: any version.
    pub fn load_for(driver: Option<(i32, i32)>) -> Result<Arc<Self>, GpuError> {
        cuda_libs::open_first(
            CudaLib::NvJpeg,
            driver,
            None,
            &|lib, found| {
                Self::bind(lib, &found.file()).map_err(|e| match e {
                    GpuError::NoNvJpeg(why) => why,
                    other => other.to_string(),
                })
            },
            &|nv| nv.version.map(|v| v.0),
        )
        .map(Arc::new)
        .map_err(GpuError::NoNvJpeg)
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
            roi: (|| {
                Some(RoiApi {
                    params_create: get(&lib, "nvjpegDecodeParamsCreate").ok()?,
                    params_destroy: get(&lib, "nvjpegDecodeParamsDestroy").ok()?,
                    params_set_roi: get(&lib, "nvjpegDecodeParamsSetROI").ok()?,
                    params_set_output_format: get(&lib, "nvjpegDecodeParamsSetOutputFormat")
                        .ok()?,
                    decode_batched_ex: get(&lib, "nvjpegDecodeBatchedEx").ok()?,
                })
            })(),
            library: name.to_string(),
            version: get::<GetProperty>(&lib, "nvjpegGetProperty")
                .ok()
                .and_then(|f| {
                    let property = |p: c_int| {
                        let mut v: c_int = 0;
                        // SAFETY: a plain query (no GPU involved); out-pointer to a local.
                        (unsafe { f(p, &mut v) } == 0).then_some(v)
                    };
                    Some((property(0)?, property(1)?, property(2)?))
                }),
            _lib: lib,
        })
    }

    /// "12.4.0" style, or "unknown version".
    pub fn version_string(&self) -> String {
        self.version
            .map_or("unknown version".into(), |(a, b, c)| format!("{a}.{b}.{c}"))
    }

    /// Whether this libnvjpeg has the batched ROI decode entry points.
    pub fn has_roi_decode(&self) -> bool {
        self.roi.is_some()
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
    device: Arc<GpuDevice>,
    handle: Handle,
    state: State,
    backend: NvJpegBackend,
    stream: Arc<CudaStream>,
    initialized_for: usize,
    /// nvJPEG's planar output, reused across batches (grown, never shrunk).
    planes: Option<CudaSlice<u8>>,
    /// One nvJPEG decode-params object per batch position (ROI decode), created on demand.
    params: Vec<Params>,
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
            params: Vec::new(),
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
            widths: [0; MAX_COMPONENTS],
            heights: [0; MAX_COMPONENTS],
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
        let rois: Vec<Roi> = dims.iter().map(|&(w, h)| Roi::full(w, h)).collect();
        self.decode_parts(jpegs, dims, &rois)
    }

    /// Decodes part `rois[k]` of each image into one device buffer, RGB interleaved, back to
    /// back (`DecodedBatch.images` gives each part's offset and size).
    pub fn decode_parts(
        &mut self,
        jpegs: &[&[u8]],
        dims: &[(u32, u32)],
        rois: &[Roi],
    ) -> Result<DecodedBatch, GpuError> {
        let mut images = Vec::with_capacity(rois.len());
        let mut total = 0usize;
        for r in rois {
            images.push((total, r.width, r.height));
            total += r.pixels() as usize * 3;
        }
        // SAFETY: u8 needs no initialisation before the conversion writes every pixel.
        let mut buffer = unsafe { self.stream.alloc::<u8>(total.max(1)) }
            .map_err(|e| GpuError::alloc(e, total))?;
        let offsets: Vec<usize> = images.iter().map(|&(o, _, _)| o).collect();
        self.decode_into(jpegs, dims, rois, &mut buffer, &offsets)?;
        Ok(DecodedBatch { buffer, images })
    }

    /// Decodes part `rois[k]` of image k of `jpegs` into `dst` as interleaved RGB (pitch
    /// roi width * 3) at byte `offsets[k]`, and waits for it. `dims` are the headers' full
    /// sizes (nvJPEG's reading must agree); every part must fit. nvJPEG writes planar YCbCr
    /// into a scratch buffer; `ycbcr_to_rgb_u8` converts.
    pub fn decode_into(
        &mut self,
        jpegs: &[&[u8]],
        dims: &[(u32, u32)],
        rois: &[Roi],
        dst: &mut CudaSlice<u8>,
        offsets: &[usize],
    ) -> Result<(), GpuError> {
        let n = jpegs.len();
        let bad = |status: String| GpuError::NvJpeg {
            call: "decode_into",
            status,
        };
        if n == 0 || n > 65535 || dims.len() != n || rois.len() != n || offsets.len() != n {
            return Err(bad(format!(
                "{n} images, {} sizes, {} parts, {} offsets",
                dims.len(),
                rois.len(),
                offsets.len()
            )));
        }
        for (r, &off) in rois.iter().zip(offsets) {
            if off as u64 + r.pixels() * 3 > dst.len() as u64 {
                return Err(bad(format!("a {r:?} part at {off} overruns the buffer")));
            }
        }
        // Plane layouts from nvJPEG's own reading of each header, checked against ours.
        let infos = jpegs
            .iter()
            .map(|j| self.plane_info(j))
            .collect::<Result<Vec<_>, _>>()?;
        let (descs, plane_bytes) = batch_planes(&infos, dims, rois, offsets).map_err(bad)?;
        let partial = rois
            .iter()
            .zip(dims)
            .any(|(r, &(w, h))| *r != Roi::full(w, h));
        let stream = self.stream.clone();
        if self.planes.as_ref().is_none_or(|p| p.len() < plane_bytes) {
            self.planes = None; // free the old one first
            let len = plane_bytes + plane_bytes / 4;
            // SAFETY: nvJPEG writes every plane byte the conversion reads.
            self.planes =
                Some(unsafe { stream.alloc::<u8>(len) }.map_err(|e| GpuError::alloc(e, len))?);
        }
        // Decode params with each image's ROI, when any image is decoded in part.
        let params = if partial {
            Some(self.roi_params(rois, dims)?)
        } else {
            None
        };
        let planes = self
            .planes
            .as_mut()
            .ok_or_else(|| bad("no plane buffer".into()))?;
        // The batch size is fixed at initialisation, so a new count re-initialises (most
        // batches, as the split moves); NVIDIA's nvImageCodec initialises before every
        // batched hardware decode, so this is the intended use, not a slow path.
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
                .map(|d| {
                    let [y, cb, cr] = plane_destinations(d);
                    NvJpegImage {
                        channel: [at(y.0), at(cb.0), at(cr.0), std::ptr::null_mut()],
                        pitch: [y.1, cb.1, cr.1, 0],
                    }
                })
                .collect();
            let data: Vec<*const u8> = jpegs.iter().map(|j| j.as_ptr()).collect();
            let lengths: Vec<usize> = jpegs.iter().map(|j| j.len()).collect();
            // SAFETY (both calls): `data`/`lengths` describe `n` live host buffers; each
            // image's planes point into `planes` at the sizes nvJPEG itself reported for that
            // image (`batch_planes`, buffer grown to their sum above); the stream belongs to
            // this device's context. nvJPEG copies what it needs from the host buffers before
            // returning.
            let status = if let Some(params) = &params {
                let api = self.nv.roi.ok_or_else(|| bad("no ROI decode".into()))?;
                // SAFETY: as for nvjpegDecodeBatched, plus `params`: n live decode-params
                // objects of this handle, each with its image's ROI set (the planes above are
                // sized for that ROI).
                unsafe {
                    (api.decode_batched_ex)(
                        self.handle,
                        self.state,
                        data.as_ptr(),
                        lengths.as_ptr(),
                        dest.as_mut_ptr(),
                        params.as_ptr().cast_mut(),
                        stream.cu_stream(),
                    )
                }
            } else {
                // SAFETY: see above.
                unsafe {
                    (self.nv.decode_batched)(
                        self.handle,
                        self.state,
                        data.as_ptr(),
                        lengths.as_ptr(),
                        dest.as_mut_ptr(),
                        stream.cu_stream(),
                    )
                }
            };
            if status != 0 {
                // A failed batch can leave the batched state half set up: initialise again.
                self.initialized_for = 0;
            }
            let call = if params.is_some() {
                "nvjpegDecodeBatchedEx"
            } else {
                "nvjpegDecodeBatched"
            };
            check(call, status)?;
        }
        let descs_dev = stream.clone_htod(&descs)?;
        let most = descs
            .iter()
            .map(|d| (d.width as u32).saturating_mul(d.height as u32))
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
    /// One decode-params object per image with its ROI set (the whole image: -1 sizes).
    fn roi_params(&mut self, rois: &[Roi], dims: &[(u32, u32)]) -> Result<Vec<Params>, GpuError> {
        let api = self.nv.roi.ok_or_else(|| {
            GpuError::NoNvJpeg("this libnvjpeg has no nvjpegDecodeBatchedEx".into())
        })?;
        while self.params.len() < rois.len() {
            let mut p: Params = std::ptr::null_mut();
            // SAFETY: live handle; out-pointer to a params object, destroyed in Drop.
            check("nvjpegDecodeParamsCreate", unsafe {
                (api.params_create)(self.handle, &mut p)
            })?;
            self.params.push(p);
        }
        for ((&p, r), &(w, h)) in self.params.iter().zip(rois).zip(dims) {
            let (x, y, rw, rh) = if *r == Roi::full(w, h) {
                (0, 0, -1, -1)
            } else {
                (
                    r.x as c_int,
                    r.y as c_int,
                    r.width as c_int,
                    r.height as c_int,
                )
            };
            // SAFETY: `p` is a live params object created above.
            check("nvjpegDecodeParamsSetROI", unsafe {
                (api.params_set_roi)(p, x, y, rw, rh)
            })?;
            // SAFETY: as above.
            check("nvjpegDecodeParamsSetOutputFormat", unsafe {
                (api.params_set_output_format)(p, NVJPEG_OUTPUT_YUV)
            })?;
        }
        Ok(self.params[..rois.len()].to_vec())
    }

    /// Decodes the start-up check's generated images (every chroma layout the GPU takes, an
    /// odd size) in one batch and compares them with zune-jpeg's decode
    /// (`decode_check::check_decoder`): GPU decoding should be switched on only if this
    /// passes. Images nvJPEG refuses are reported, not failed.
    pub fn check_against_cpu(&mut self) -> Result<CheckReport, String> {
        let images = check_images()?;
        check_decoder(&images, |batch| {
            let jpegs: Vec<&[u8]> = batch.iter().map(|i| i.jpeg.as_slice()).collect();
            let dims: Vec<(u32, u32)> = batch.iter().map(|i| (i.width, i.height)).collect();
            let decoded = self
                .decode_batch(&jpegs, &dims)
                .map_err(|e| e.to_string())?;
            (0..batch.len())
                .map(|k| self.download(&decoded, k).map_err(|e| e.to_string()))
                .collect()
        })
    }

    /// Where ROI decode can be used: this nvJPEG has it, and, per chroma layout (4:2:0,
    /// 4:2:2, 4:4:0, 4:4:4, gray), a part of a generated image decodes to the same pixels as
    /// the whole image inside the crop region, so a library that places partial planes
    /// otherwise than [`crate::jpeg_planes::roi_planes`] assumes is found before any batch.
    pub fn check_roi(&mut self) -> RoiSupport {
        if self.nv.roi.is_none() {
            return RoiSupport::off(
                "this libnvjpeg has no batched ROI decode (nvjpegDecodeBatchedEx)",
            );
        }
        let mut support = RoiSupport::default();
        for (layout, sampling) in [
            ("4:2:0", Some(SamplingFactor::F_2_2)),
            ("4:2:2", Some(SamplingFactor::F_2_1)),
            ("4:4:0", Some(SamplingFactor::F_1_2)),
            ("4:4:4", Some(SamplingFactor::F_1_1)),
            ("gray", None),
        ] {
            support.record(layout, self.check_roi_on(sampling));
        }
        support
    }

    /// One layout of `check_roi`: a 96x80 image's part around a region at odd offsets
    /// against its whole decode.
    fn check_roi_on(&mut self, sampling: Option<SamplingFactor>) -> Result<(), String> {
        let (w, h) = (96u32, 80u32);
        let region = (21u32, 19u32, 40u32, 33u32);
        let jpeg = test_jpeg(w, h, sampling).map_err(|e| format!("test image: {e}"))?;
        let whole = self
            .decode_batch(&[&jpeg], &[(w, h)])
            .and_then(|b| self.download(&b, 0))
            .map_err(|e| format!("whole image: {e}"))?;
        let info =
            augserve_core::decode::jpeg_info(&jpeg).map_err(|e| format!("test image: {e}"))?;
        let roi = roi_for_header(&info, region);
        let part = self
            .decode_part_to_host(&jpeg, (w, h), roi)
            .map_err(|e| format!("ROI {roi:?}: {e}"))?;
        let (x, y, rw, rh) = region;
        for row in y..y + rh {
            let a = ((row * w + x) * 3) as usize;
            let b = (((row - roi.y) * roi.width + (x - roi.x)) * 3) as usize;
            let n = rw as usize * 3;
            if whole.get(a..a + n) != part.get(b..b + n) {
                return Err(format!(
                    "ROI {roi:?} decode differs from the whole-image decode in row {row}"
                ));
            }
        }
        Ok(())
    }

    /// Decodes part `roi` of one image (full size `dims`) and copies it to the host, RGB with
    /// pitch roi width * 3 (checks only).
    pub fn decode_part_to_host(
        &mut self,
        jpeg: &[u8],
        dims: (u32, u32),
        roi: Roi,
    ) -> Result<Vec<u8>, GpuError> {
        let b = self.decode_parts(&[jpeg], &[dims], &[roi])?;
        self.download(&b, 0)
    }

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
        if let Some(api) = self.nv.roi {
            for &p in &self.params {
                // SAFETY: created by roi_params with this handle, destroyed once, before it.
                unsafe { (api.params_destroy)(p) };
            }
        }
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
            Ok(nv) => assert!(nv.library.contains("libnvjpeg"), "{}", nv.library),
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

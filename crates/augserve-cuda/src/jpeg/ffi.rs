//! nvJPEG's C interface, loaded at run time (dlopen through libloading, like cudarc loads
//! libcuda): the binary builds and runs without it, and `NvJpeg::load` says why it is
//! unavailable. Only the functions the batched decoder uses are bound; every call goes through
//! `check`. The decoder's state machine is `decoder.rs`.
//!
//! The signatures, enum values and `nvjpegImage_t` layout below were checked against the
//! `nvjpeg.h` of PyPI's nvidia-nvjpeg-cu12 12.4.0.76 and nvidia-nvjpeg 13.2.3.58 (the same
//! for everything bound here); `tests/cuda_libs.rs` opens both libraries (no GPU needed) and
//! binds every function, the ROI entry points included.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use cudarc::driver::sys::CUstream;

use super::planes::MAX_COMPONENTS;
use crate::cuda_libs::{self, CudaLib};
use crate::GpuError;

pub(crate) type Status = c_int;
pub(crate) type Handle = *mut c_void;
pub(crate) type State = *mut c_void;

pub(crate) const NVJPEG_BACKEND_DEFAULT: c_int = 0;
pub(crate) const NVJPEG_BACKEND_HARDWARE: c_int = 3;
pub(crate) const NVJPEG_OUTPUT_YUV: c_int = 1;
pub(crate) const NVJPEG_OUTPUT_Y: c_int = 2;
pub(crate) const NVJPEG_OUTPUT_RGBI: c_int = 5;
pub(crate) const NVJPEG_OUTPUT_NV12: c_int = 8;
/// nvjpegChromaSubsampling_t NVJPEG_CSS_420.
pub(crate) const NVJPEG_CSS_420: c_int = 2;

/// nvjpegImage_t: one destination image (interleaved RGB uses channel 0 only).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct NvJpegImage {
    pub(crate) channel: [*mut u8; MAX_COMPONENTS],
    pub(crate) pitch: [usize; MAX_COMPONENTS],
}

pub(crate) type CreateEx =
    unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> Status;
pub(crate) type Destroy = unsafe extern "C" fn(Handle) -> Status;
pub(crate) type StateCreate = unsafe extern "C" fn(Handle, *mut State) -> Status;
pub(crate) type StateDestroy = unsafe extern "C" fn(State) -> Status;
pub(crate) type BatchedInitialize =
    unsafe extern "C" fn(Handle, State, c_int, c_int, c_int) -> Status;
pub(crate) type GetImageInfo = unsafe extern "C" fn(
    Handle,
    *const u8,
    usize,
    *mut c_int,
    *mut c_int,
    *mut c_int,
    *mut c_int,
) -> Status;
pub(crate) type DecodeBatched = unsafe extern "C" fn(
    Handle,
    State,
    *const *const u8,
    *const usize,
    *mut NvJpegImage,
    CUstream,
) -> Status;

/// nvjpegGetProperty(libraryPropertyType, int*): MAJOR_VERSION 0, MINOR_VERSION 1,
/// PATCH_LEVEL 2.
pub(crate) type GetProperty = unsafe extern "C" fn(c_int, *mut c_int) -> Status;

pub(crate) type Params = *mut c_void;
pub(crate) type ParamsCreate = unsafe extern "C" fn(Handle, *mut Params) -> Status;
pub(crate) type ParamsDestroy = unsafe extern "C" fn(Params) -> Status;
pub(crate) type ParamsSetRoi = unsafe extern "C" fn(Params, c_int, c_int, c_int, c_int) -> Status;
pub(crate) type ParamsSetOutputFormat = unsafe extern "C" fn(Params, c_int) -> Status;
pub(crate) type DecodeBatchedEx = unsafe extern "C" fn(
    Handle,
    State,
    *const *const u8,
    *const usize,
    *mut NvJpegImage,
    *mut Params,
    CUstream,
) -> Status;

/// nvjpegDecodeBatchedPreAllocate(handle, state, batch_size, width, height, chroma
/// subsampling, output format).
pub(crate) type PreAllocate =
    unsafe extern "C" fn(Handle, State, c_int, c_int, c_int, c_int, c_int) -> Status;
/// nvjpegGetHardwareDecoderInfo(handle, num_engines, num_cores_per_engine).
pub(crate) type GetHardwareDecoderInfo =
    unsafe extern "C" fn(Handle, *mut c_uint, *mut c_uint) -> Status;

/// The region-of-interest entry points (nvJPEG 11.6+; batched ROI decode on the hardware
/// engine, as nvImageCodec and DALI use it). Optional: without them every image is decoded
/// whole.
#[derive(Clone, Copy)]
pub(crate) struct RoiApi {
    pub(crate) params_create: ParamsCreate,
    pub(crate) params_destroy: ParamsDestroy,
    pub(crate) params_set_roi: ParamsSetRoi,
    pub(crate) params_set_output_format: ParamsSetOutputFormat,
    pub(crate) decode_batched_ex: DecodeBatchedEx,
}

/// The library and the functions we use (valid while `_lib` lives).
pub struct NvJpeg {
    pub(crate) create_ex: CreateEx,
    pub(crate) destroy: Destroy,
    pub(crate) state_create: StateCreate,
    pub(crate) state_destroy: StateDestroy,
    pub(crate) batched_initialize: BatchedInitialize,
    pub(crate) decode_batched: DecodeBatched,
    pub(crate) get_image_info: GetImageInfo,
    pub(crate) roi: Option<RoiApi>,
    /// Optional (nvJPEG 11.9+): internal buffers allocated up front, engine count.
    pub(crate) pre_allocate: Option<PreAllocate>,
    pub(crate) hardware_decoder_info: Option<GetHardwareDecoderInfo>,
    /// Which file was loaded.
    pub library: String,
    /// Its version (major, minor, patch), where it says.
    pub version: Option<(i32, i32, i32)>,
    pub(crate) _lib: libloading::Library,
}

/// nvjpegStatus_t names.
pub(crate) fn status_name(s: Status) -> String {
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

pub(crate) fn check(call: &'static str, s: Status) -> Result<(), GpuError> {
    if s == 0 {
        Ok(())
    } else {
        Err(GpuError::NvJpeg {
            call,
            status: status_name(s),
        })
    }
}

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
            pre_allocate: get(&lib, "nvjpegDecodeBatchedPreAllocate").ok(),
            hardware_decoder_info: get(&lib, "nvjpegGetHardwareDecoderInfo").ok(),
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

use cudarc::driver::sys::CUresult;
use cudarc::driver::DriverError;

/// Why the GPU path is unavailable or failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("GPU unavailable: libcuda not found (no NVIDIA driver)")]
    NoDriver,
    #[error("GPU unavailable: {0}")]
    NoNvrtc(String),
    #[error("GPU unavailable: {0}")]
    NoDevice(String),
    /// A broken invariant of the GPU path (a buffer not allocated, a slot out of range): a bug,
    /// not a missing GPU.
    #[error("GPU path internal error (a bug; please report it): {0}")]
    Internal(String),
    #[error("kernel compilation failed: {0}")]
    Compile(String),
    #[error("GPU out of memory allocating {bytes} bytes")]
    OutOfMemory { bytes: usize },
    #[error("batch of {0} images exceeds the GPU grid limit of 65535")]
    BatchTooLarge(usize),
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    #[error("GPU JPEG decoding unavailable: {0}")]
    NoNvJpeg(String),
    /// nvJPEG works but decoded the start-up check's images wrongly (`jpeg::check`).
    #[error(
        "GPU JPEG decoding off: nvJPEG failed its start-up check against the CPU decoder: {0}"
    )]
    DecodeCheck(String),
    #[error("nvJPEG {call}: {status}")]
    NvJpeg { call: &'static str, status: String },
    /// Images left to the GPU decoder failed there and on the CPU (per-image errors).
    #[error("{} image(s) failed to decode on the GPU and on the CPU", .0.len())]
    DeferredFailed(Vec<augserve_core::SampleError>),
}

impl From<GpuError> for augserve_core::Error {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::DeferredFailed(failed) => augserve_core::Error::DeferredImagesFailed(failed),
            other => augserve_core::Error::Backend(other.to_string()),
        }
    }
}

impl GpuError {
    /// Maps an allocation failure, naming the size when the driver ran out of memory.
    pub(crate) fn alloc(e: DriverError, bytes: usize) -> Self {
        if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            GpuError::OutOfMemory { bytes }
        } else {
            GpuError::Driver(e)
        }
    }
}

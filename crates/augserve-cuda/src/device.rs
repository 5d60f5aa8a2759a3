//! Finding a usable GPU: driver present, device present, kernels compiled and loaded.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};

use crate::kernels::{compile_for_device, Kernel};
use crate::GpuError;

/// What `augserve` reports about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
    /// The CUDA version the driver runs (major, minor).
    pub driver_cuda: (i32, i32),
    /// How the kernels were compiled ("sm_90 machine code by NVRTC 12.9").
    pub kernels: String,
}

/// An opened device with its kernels compiled (once per process per device) and loaded.
pub struct GpuDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) info: GpuInfo,
    /// Every kernel, in `Kernel::ALL`'s order.
    functions: Vec<CudaFunction>,
}

/// Whether a libnvrtc the driver can run (any, without a driver) can be loaded; enough to
/// compile the kernels, no GPU needed. Found by the dynamic loader, or in the CUDA toolkit's
/// folder or a Python environment's NVIDIA wheels (`cuda_libs`).
pub fn nvrtc_available() -> bool {
    crate::nvrtc::preferred().is_ok()
}

fn driver_available() -> bool {
    // SAFETY: as above, for libcuda. cudarc panics on first use when the library is
    // missing, so this probe must come before any driver call.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl GpuDevice {
    /// Opens device `ordinal` and compiles the kernels for its architecture.
    pub fn open(ordinal: usize) -> Result<Arc<Self>, GpuError> {
        if !driver_available() {
            return Err(GpuError::NoDriver);
        }
        // Before touching the device: a host without a usable NVRTC says so without creating
        // a context.
        let nvrtc = crate::nvrtc::preferred().map_err(GpuError::NoNvrtc)?;
        tracing::debug!("libnvrtc: {}", nvrtc.found);
        let driver_cuda = crate::cuda_libs::driver_cuda_version().unwrap_or_default();
        let count = CudaContext::device_count().map_err(|e| GpuError::NoDevice(format!("{e}")))?;
        if count <= 0 || ordinal >= count as usize {
            return Err(GpuError::NoDevice(format!(
                "no CUDA device {ordinal} ({count} present)"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| GpuError::NoDevice(format!("{e}")))?;
        let (major, minor) = ctx.compute_capability()?;
        let compiled = compile_for_device((major, minor))?;
        let kernels = compiled.describe();
        let module = match ctx.load_module(compiled.module) {
            Ok(m) => m,
            // Not expected (a cubin for the device's own architecture, from an NVRTC the
            // driver runs), but the same compilation's PTX may still load: the driver says
            // which it takes.
            Err(e) => {
                tracing::warn!("loading the {kernels} failed ({e}); trying its PTX");
                ctx.load_module(cudarc::nvrtc::Ptx::from_src(compiled.ptx))?
            }
        };
        let info = GpuInfo {
            ordinal,
            name: ctx.name()?,
            compute_capability: (major, minor),
            total_memory: ctx.total_mem()?,
            driver_cuda,
            kernels,
        };
        let functions = Kernel::ALL
            .iter()
            .map(|k| module.load_function(k.name()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(GpuDevice {
            ctx,
            info,
            functions,
        }))
    }

    /// A loaded kernel.
    pub(crate) fn kernel(&self, k: Kernel) -> &CudaFunction {
        // `functions` holds every kernel of `Kernel::ALL`, in its order (loaded in `open`).
        &self.functions[k as usize]
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }
}

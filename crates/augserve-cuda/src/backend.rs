//! Opening the batch-ops backend, said once for every front (`augserve run`, `serve`, `bench`,
//! `gpu`): the GPU when asked for or available, its JPEG decoder when asked for, else the CPU,
//! with why.

use std::sync::Arc;

use augserve_core::{BatchOps, CpuBatchOps};

use crate::jpeg::route::DecodeSplit;
use crate::{GpuBatchOps, GpuDevice, GpuError, StandInOps};

/// The CPU's JPEG decoder, as reports name it (zune-jpeg takes what libjpeg-turbo declines).
pub const CPU_JPEG_DECODER: &str = "libjpeg-turbo";

/// Where the batch ops should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The GPU when one is usable, else the CPU.
    Auto,
    Cpu,
    /// The GPU, or an error.
    Gpu,
    /// No device: the GPU path's host side on host memory, every JPEG left to a no-op
    /// decoder ([`StandInOps`]). Measures host overhead; its tensors hold no pixels.
    StandIn,
}

/// An opened backend and what a report says about it.
pub struct Backend {
    pub ops: Arc<dyn BatchOps>,
    /// Why the batch ops are not on a GPU; `None` when they are.
    pub gpu_unavailable: Option<String>,
    /// Who decodes JPEGs ("libjpeg-turbo", "nvjpeg-hardware", "nvjpeg-cuda") and a note: why not
    /// the GPU, or not its hardware engine.
    pub jpeg_decoder: (String, String),
    /// One line for logs: the device and where JPEGs are decoded.
    pub summary: String,
    /// The GPU backend itself, for reports only it gives (`augserve gpu`); `None` on the CPU.
    pub gpu: Option<Arc<GpuBatchOps>>,
    /// When GPU decoding was asked for on a GPU: the decoder chosen, or why none.
    pub gpu_decode: Option<Result<String, String>>,
}

/// The stand-in device's backend (no GPU, no pixels: a benchmark of the host side).
fn stand_in() -> Backend {
    let ops = Arc::new(StandInOps::new());
    Backend {
        summary: ops.device(),
        ops,
        gpu_unavailable: Some("the stand-in device was asked for".into()),
        jpeg_decoder: ("stand-in (no-op)".into(), "every JPEG nvJPEG takes".into()),
        gpu: None,
        gpu_decode: None,
    }
}

/// Opens the backend `device` asks for on GPU `cuda_device` (`cpu` otherwise), decoding JPEGs
/// on the GPU too when `gpu_decode` is given. Fails only when the GPU was required.
pub fn open_backend(
    device: DeviceRequest,
    cuda_device: usize,
    cpu: CpuBatchOps,
    gpu_decode: Option<DecodeSplit>,
) -> Result<Backend, GpuError> {
    let decode_off = || match gpu_decode {
        None => "gpu_decode is off".to_string(),
        Some(_) => String::new(),
    };
    let on_cpu = |why: String| Backend {
        ops: Arc::new(cpu.clone()),
        jpeg_decoder: (
            CPU_JPEG_DECODER.into(),
            match gpu_decode {
                None => decode_off(),
                Some(_) => why.clone(),
            },
        ),
        summary: format!("cpu ({why})"),
        gpu_unavailable: Some(why),
        gpu: None,
        gpu_decode: None,
    };
    if device == DeviceRequest::Cpu {
        return Ok(on_cpu("as asked".into()));
    }
    if device == DeviceRequest::StandIn {
        return Ok(stand_in());
    }
    let mut gpu = match GpuDevice::open(cuda_device)
        .and_then(|d| GpuBatchOps::new(d, crate::staging::BATCHES_IN_FLIGHT))
    {
        Ok(g) => g,
        Err(e) if device == DeviceRequest::Gpu => return Err(e),
        Err(e) => {
            tracing::info!("{e}; batch ops run on the CPU");
            return Ok(on_cpu(e.to_string()));
        }
    };
    let mut summary = gpu.describe();
    let mut jpeg_decoder = (CPU_JPEG_DECODER.to_string(), decode_off());
    let mut decode_outcome = None;
    if let Some(split) = gpu_decode {
        let enabled = gpu.enable_gpu_decode(split);
        decode_outcome = Some(
            enabled
                .as_ref()
                .map(|c| c.to_string())
                .map_err(|e| e.to_string()),
        );
        match enabled {
            Ok(choice) => {
                tracing::info!(
                    backend = choice.backend.name(),
                    "JPEG decoding on the GPU ({choice}) and the CPU"
                );
                summary += &format!("; JPEG decoding: {choice}, and the CPU");
                jpeg_decoder = (choice.backend.name().into(), choice.note);
            }
            Err(e) => {
                tracing::warn!("{e}; JPEG decoding stays on the CPU");
                summary += &format!("; JPEG decoding on the CPU ({e})");
                jpeg_decoder.1 = e.to_string();
            }
        }
    }
    let gpu = Arc::new(gpu);
    Ok(Backend {
        ops: gpu.clone(),
        gpu_unavailable: None,
        jpeg_decoder,
        summary,
        gpu: Some(gpu),
        gpu_decode: decode_outcome,
    })
}

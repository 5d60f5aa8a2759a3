//! `augserve gpu`: whether the GPU path is usable on this machine and what it would use (the
//! CUDA libraries found and where, the device, nvJPEG's start-up check), or why not.

use augserve_core::CpuBatchOps;
use augserve_cuda::cuda_libs::{driver_cuda_version, CudaLib};
use augserve_cuda::jpeg::route::DecodeSplit;
use augserve_cuda::jpeg::NvJpeg;
use augserve_cuda::{open_backend, DeviceRequest};

#[derive(clap::Args, Debug)]
pub struct GpuArgs {
    /// Only list, one per line, the PyPI packages of the CUDA libraries not found (none:
    /// nothing printed); what scripts/run.sh installs. Opens no device.
    #[arg(long)]
    pub missing_libs: bool,
    /// Which GPU to report on: its CUDA device ordinal.
    #[arg(long, default_value_t = 0, env = "AUGSERVE_CUDA_DEVICE")]
    pub cuda_device: usize,
}

/// Prints the report; fails (exit 1) when the GPU batch ops are not usable.
pub fn gpu(args: GpuArgs) -> anyhow::Result<()> {
    let nvrtc = augserve_cuda::nvrtc::preferred();
    let nvjpeg = NvJpeg::load();
    if args.missing_libs {
        if nvrtc.is_err() {
            println!("{}", CudaLib::Nvrtc.pip_package());
        }
        if nvjpeg.is_err() {
            println!("{}", CudaLib::NvJpeg.pip_package());
        }
        return Ok(());
    }
    match driver_cuda_version() {
        Some((major, minor)) => println!("Driver: runs CUDA {major}.{minor}"),
        None => println!("Driver: libcuda not found (no NVIDIA driver)"),
    }
    match &nvrtc {
        Ok(n) => println!(
            "NVRTC:  {}.{}, {} (machine code for sm_{}..sm_{})",
            n.version.0,
            n.version.1,
            n.found,
            n.supported_archs.iter().min().unwrap_or(&0),
            n.supported_archs.iter().max().unwrap_or(&0)
        ),
        Err(e) => println!("NVRTC:  {e}"),
    }
    match &nvjpeg {
        Ok(nv) => println!(
            "nvJPEG: {}, {} (batched ROI decode: {})",
            nv.version_string(),
            nv.library,
            if nv.has_roi_decode() { "yes" } else { "no" }
        ),
        Err(e) => println!("nvJPEG: {e}"),
    }
    let split = nvjpeg.is_ok().then(DecodeSplit::default);
    let backend = open_backend(
        DeviceRequest::Gpu,
        args.cuda_device,
        CpuBatchOps::default(),
        split,
    )
    .map_err(|e| anyhow::anyhow!("{e}; batch ops and JPEG decoding run on the CPU"))?;
    let Some(gpu) = &backend.gpu else {
        anyhow::bail!("no GPU backend: {}", backend.summary);
    };
    println!("GPU:    {}", gpu.describe());
    match &backend.gpu_decode {
        Some(Ok(choice)) => println!(
            "GPU JPEG decoding (--gpu-decode): {choice}; {}",
            gpu.gpu_decode_checks().unwrap_or_default()
        ),
        Some(Err(e)) => println!("GPU JPEG decoding (--gpu-decode): {e}"),
        None => {}
    }
    Ok(())
}

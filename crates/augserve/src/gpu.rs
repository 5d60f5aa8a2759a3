//! `augserve gpu`: whether the GPU path is usable on this machine and what it would use (the
//! CUDA libraries found and where, the device, nvJPEG's start-up check), or why not.

use augserve_cuda::cuda_libs::{driver_cuda_version, CudaLib};
use augserve_cuda::gpu_decode::DecodeSplit;
use augserve_cuda::nvjpeg::NvJpeg;
use augserve_cuda::{GpuBatchOps, GpuDevice};

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
    let device = GpuDevice::open(args.cuda_device).and_then(|d| GpuBatchOps::new(d, 2));
    let mut ops = match device {
        Ok(ops) => ops,
        Err(e) => anyhow::bail!("{e}; batch ops and JPEG decoding run on the CPU"),
    };
    println!("GPU:    {}", ops.describe());
    if nvjpeg.is_ok() {
        match ops.enable_gpu_decode(DecodeSplit::default()) {
            Ok(choice) => println!(
                "GPU JPEG decoding (--gpu-decode): {choice}; {}",
                ops.gpu_decode_checks().unwrap_or_default()
            ),
            Err(e) => println!("GPU JPEG decoding (--gpu-decode): {e}"),
        }
    }
    Ok(())
}

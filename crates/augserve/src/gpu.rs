//! `augserve gpu`: whether the GPU path is usable on this machine and what it would use (the
//! CUDA libraries found and where, the device, nvJPEG's start-up check), or why not.

use augserve_cuda::cuda_libs::{locate_nvrtc, nvrtc_version, CudaLib};
use augserve_cuda::gpu_decode::DecodeSplit;
use augserve_cuda::nvjpeg::NvJpeg;
use augserve_cuda::{GpuBatchOps, GpuDevice};

#[derive(clap::Args, Debug)]
pub struct GpuArgs {
    /// Only list, one per line, the PyPI packages of the CUDA libraries not found (none:
    /// nothing printed); what scripts/run.sh installs. Opens no device.
    #[arg(long)]
    pub missing_libs: bool,
}

/// Prints the report; fails (exit 1) when the GPU batch ops are not usable.
pub fn gpu(args: GpuArgs) -> anyhow::Result<()> {
    let nvrtc = locate_nvrtc();
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
    match &nvrtc {
        Ok(found) => {
            let version =
                nvrtc_version().map_or("unknown version".into(), |(a, b)| format!("{a}.{b}"));
            println!("NVRTC:  {version}, {found}")
        }
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
    let device = GpuDevice::open(0).and_then(|d| GpuBatchOps::new(d, 2));
    let mut ops = match device {
        Ok(ops) => ops,
        Err(e) => anyhow::bail!("{e}; batch ops and JPEG decoding run on the CPU"),
    };
    println!("GPU:    {}", crate::run::describe_gpu(&ops));
    if nvjpeg.is_ok() {
        match ops.enable_gpu_decode(DecodeSplit::default()) {
            Ok(backend) => println!(
                "GPU JPEG decoding (--gpu-decode): nvJPEG, {backend:?} backend; {}",
                ops.gpu_decode_checks().unwrap_or_default()
            ),
            Err(e) => println!("GPU JPEG decoding (--gpu-decode): {e}"),
        }
    }
    Ok(())
}

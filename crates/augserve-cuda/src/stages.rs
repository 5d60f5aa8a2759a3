//! The device stages of one batch, each a small unit on the slot's stream: upload, resize,
//! mix + normalise, statistics, download. `GpuBatchOps::run_gpu_to` calls them in order
//! (GPU JPEG decoding, `jpeg/stage.rs`, runs between upload and resize). Adding a GPU op: its
//! kernel in `kernels/*.cu`, its line in `kernels!` (kernels.rs), a function here, its call
//! in `run_gpu_to`.

use std::sync::Arc;

use augserve_core::pipeline::PreparedImage;
use augserve_core::PipelineSpec;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, PushKernelArg};

use crate::device::GpuDevice;
use crate::ipc::IpcRing;
use crate::kernels::{dtype_code, layout_code, Kernel, ResizeDesc};
use crate::launch::{grid, launch};
use crate::plan::{HostPlan, ResizePlan, WeightsOn};
use crate::staging::{pack_regions, Buffers};
use crate::GpuError;

/// Where the batch's output tensor is downloaded to.
pub(crate) enum DownloadTo<'a> {
    /// The slot's pinned staging memory (copied out after).
    Staging,
    /// Host memory registered with the device (`host_output.rs`): the tensor's final place.
    Registered(&'a mut [u8]),
    /// A slot of a CUDA IPC ring, device to device.
    Ring(&'a IpcRing, u32),
}

/// Packs the host regions into pinned memory and uploads them, with the descriptors, tables
/// and normalisation; zeroes the sums.
pub(crate) fn upload(
    stream: &Arc<CudaStream>,
    b: &mut Buffers<'_>,
    images: &[PreparedImage],
    plan: &HostPlan,
) -> Result<(), GpuError> {
    let cpu_bytes = plan.layout.cpu_bytes;
    pack_regions(&mut b.stage_in.as_mut_slice()?[..cpu_bytes], images);
    if cpu_bytes > 0 {
        let host = &b.stage_in.as_slice()?[..cpu_bytes];
        stream.memcpy_htod(host, &mut b.src.slice_mut(..cpu_bytes))?;
    }
    let (n, rp) = (images.len(), &plan.resize);
    stream.memcpy_htod(&rp.descs[..], &mut b.descs.slice_mut(..n))?;
    // Host weights only: the device computes its own (`resize`).
    let tl = rp.tables.len();
    if tl > 0 {
        stream.memcpy_htod(&rp.tables[..], &mut b.coeffs.slice_mut(..tl))?;
    }
    stream.memcpy_htod(&plan.mix[..], &mut b.mix.slice_mut(..n))?;
    stream.memcpy_htod(&plan.norm[..], &mut b.norm.slice_mut(..6))?;
    stream.memset_zeros(&mut *b.sums)?;
    Ok(())
}

/// Computes the resize weights of `rp`'s images from their descriptors into the coefficient
/// table (`WeightsOn::Device`).
pub(crate) fn resize_weights(
    d: &GpuDevice,
    stream: &Arc<CudaStream>,
    descs: &CudaSlice<ResizeDesc>,
    coeffs: &mut CudaSlice<i32>,
    rp: &ResizePlan,
    (out_w, out_h): (u32, u32),
) -> Result<(), GpuError> {
    let (ow, oh) = (out_w as i32, out_h as i32);
    // The table's four index arrays and the weights, each its own view (rp's offsets).
    let (mut head, mut weights) = coeffs.split_at_mut(rp.weights);
    let (mut hfirst, mut rest) = head.split_at_mut(rp.hcount);
    let (mut hcount, mut rest) = rest.split_at_mut(rp.vfirst - rp.hcount);
    let (mut vfirst, mut vcount) = rest.split_at_mut(rp.vcount - rp.vfirst);
    let cfg = grid(out_w.max(out_h), 2, rp.descs.len() as u32);
    launch(stream, d.kernel(Kernel::ResizeWeights), cfg, |a| {
        a.arg(descs)
            .arg(&mut hfirst)
            .arg(&mut hcount)
            .arg(&mut vfirst)
            .arg(&mut vcount)
            .arg(&mut weights)
            .arg(&ow)
            .arg(&oh);
    })
}

/// Resizes every image's crop to the output size (u8, flip fused), the weights first where
/// the device computes them: horizontal then vertical pass.
pub(crate) fn resize(
    d: &GpuDevice,
    stream: &Arc<CudaStream>,
    b: &mut Buffers<'_>,
    plan: &HostPlan,
    spec: &PipelineSpec,
    n: usize,
) -> Result<(), GpuError> {
    let rp = &plan.resize;
    let (out_w, out_h) = (spec.size.width, spec.size.height);
    if rp.weights_on == WeightsOn::Device {
        resize_weights(d, stream, b.descs, b.coeffs, rp, (out_w, out_h))?;
    }
    let (ow, oh) = (out_w as i32, out_h as i32);
    let coeffs = &*b.coeffs;
    let (hfirst, hcount) = (coeffs.slice(rp.hfirst..), coeffs.slice(rp.hcount..));
    let (vfirst, vcount) = (coeffs.slice(rp.vfirst..), coeffs.slice(rp.vcount..));
    let weights = coeffs.slice(rp.weights..);
    let (src, tmp, resized, descs) = (&*b.src, &mut *b.tmp, &mut *b.resized, &*b.descs);
    let cfg = grid(out_w * 3, rp.max_tmp_rows, n as u32);
    launch(stream, d.kernel(Kernel::ResizeH), cfg, |a| {
        a.arg(src)
            .arg(&mut *tmp)
            .arg(descs)
            .arg(&hfirst)
            .arg(&hcount)
            .arg(&weights)
            .arg(&ow);
    })?;
    let cfg = grid(out_w * 3, out_h, n as u32);
    launch(stream, d.kernel(Kernel::ResizeV), cfg, |a| {
        a.arg(&*tmp)
            .arg(resized)
            .arg(descs)
            .arg(&vfirst)
            .arg(&vcount)
            .arg(&weights)
            .arg(&ow)
            .arg(&oh);
    })
}

/// What the output kernels take about the output tensor: one thread per output pixel.
struct OutputArgs {
    grid: cudarc::driver::LaunchConfig,
    width: i32,
    height: i32,
    dtype: i32,
    layout: i32,
}

impl OutputArgs {
    fn of(spec: &PipelineSpec, n: usize) -> Self {
        let (w, h) = (spec.size.width, spec.size.height);
        OutputArgs {
            grid: grid(w, h, n as u32),
            width: w as i32,
            height: h as i32,
            dtype: dtype_code(spec.output.dtype),
            layout: layout_code(spec.output.layout),
        }
    }
}

/// Mixes (mixup/cutmix) and normalises the resized batch into the output tensor, summing
/// its values for the statistics.
pub(crate) fn mix_normalize(
    d: &GpuDevice,
    stream: &Arc<CudaStream>,
    b: &mut Buffers<'_>,
    spec: &PipelineSpec,
    n: usize,
) -> Result<(), GpuError> {
    let o = OutputArgs::of(spec, n);
    let (scale, bias) = (b.norm.slice(0..3), b.norm.slice(3..6));
    let (resized, mix, out) = (&*b.resized, &*b.mix, &mut *b.out);
    let mut sums = b.sums.slice_mut(0..9);
    launch(stream, d.kernel(Kernel::MixNormalize), o.grid, |a| {
        a.arg(resized)
            .arg(mix)
            .arg(&scale)
            .arg(&bias)
            .arg(&o.dtype)
            .arg(&o.layout)
            .arg(out)
            .arg(&o.height)
            .arg(&o.width)
            .arg(&mut sums);
    })
}

/// The absolute deviations from the mean (for the MAD), from the sums `mix_normalize` left.
pub(crate) fn statistics(
    d: &GpuDevice,
    stream: &Arc<CudaStream>,
    b: &mut Buffers<'_>,
    spec: &PipelineSpec,
    n: usize,
) -> Result<(), GpuError> {
    let o = OutputArgs::of(spec, n);
    let count = (n * spec.size.width as usize * spec.size.height as usize) as f64;
    let (first9, mut last3) = b.sums.split_at_mut(9);
    let first9 = first9.as_view();
    let out = &*b.out;
    launch(stream, d.kernel(Kernel::AbsDev), o.grid, |a| {
        a.arg(out)
            .arg(&o.dtype)
            .arg(&o.layout)
            .arg(&o.height)
            .arg(&o.width)
            .arg(&count)
            .arg(&first9)
            .arg(&mut last3);
    })
}

/// Enqueues the output's way off the device: into slot `slot` of an IPC ring
/// (device to device), or into pinned host memory; and the sums to `host_sums`.
pub(crate) fn download(
    stream: &Arc<CudaStream>,
    b: &mut Buffers<'_>,
    out_bytes: usize,
    to: DownloadTo<'_>,
    host_sums: &mut [f64; 12],
) -> Result<(), GpuError> {
    match to {
        DownloadTo::Ring(ring, slot) => {
            let (src, _sync) = b.out.device_ptr(stream);
            ring.copy_into(stream, src, out_bytes, slot)?;
        }
        DownloadTo::Staging => stream.memcpy_dtoh(
            &b.out.slice(..out_bytes.max(1)),
            &mut b.stage_out.as_mut_slice()?[..out_bytes.max(1)],
        )?,
        // Registered memory: a DMA straight into it (the stream is synchronised after).
        DownloadTo::Registered(out) if out_bytes > 0 => {
            stream.memcpy_dtoh(&b.out.slice(..out_bytes), &mut out[..out_bytes])?
        }
        DownloadTo::Registered(_) => {}
    }
    stream.memcpy_dtoh(&b.sums.slice(0..12), &mut host_sums[..])?;
    Ok(())
}

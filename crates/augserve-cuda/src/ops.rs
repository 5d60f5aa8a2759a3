//! The GPU implementation of the batch ops: upload the prepared crops once (u8), resize,
//! mix + normalise and measure on the device, download the finished tensor.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use augserve_core::ops::mix::{MixPlan, NormalizeCoeffs};
use augserve_core::ops::resize::Coeffs;
use augserve_core::ops::stats::BatchStats;
use augserve_core::pipeline::{tensor_shape, BatchOps, BatchOutput, CpuBatchOps, PreparedImage};
use augserve_core::{PipelineSpec, Tensor};
use cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DeviceRepr, PinnedHostSlice, PushKernelArg,
};
use rayon::ThreadPool;

use crate::device::GpuDevice;
use crate::ipc::IpcRing;
use crate::kernels::{dtype_code, layout_code, MixDesc, ResizeDesc};
use crate::launch::{grid, launch};
use crate::GpuError;

/// Per-batch buffers, reused across batches (grown, never shrunk). Each slot has its own
/// stream, so two batches in two slots overlap: one uploads while the other computes.
struct Slot {
    stream: Arc<CudaStream>,
    stage_in: Option<PinnedHostSlice<u8>>,
    stage_out: Option<PinnedHostSlice<u8>>,
    src: Option<CudaSlice<u8>>,
    tmp: Option<CudaSlice<u8>>,
    resized: Option<CudaSlice<u8>>,
    out: Option<CudaSlice<u8>>,
    descs: Option<CudaSlice<ResizeDesc>>,
    coeffs: Option<CudaSlice<i32>>,
    mix: Option<CudaSlice<MixDesc>>,
    norm: Option<CudaSlice<f32>>,
    sums: Option<CudaSlice<f64>>,
}

/// Grows `buf` to hold `n` elements (with headroom, so slowly varying batches reuse it).
fn ensure_dev<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    buf: &mut Option<CudaSlice<T>>,
    n: usize,
) -> Result<(), GpuError> {
    if buf.as_ref().is_some_and(|b| b.len() >= n.max(1)) {
        return Ok(());
    }
    *buf = None; // free the old one first
    let len = (n + n / 4).max(1);
    // SAFETY: the contents are uninitialised; every use below writes before it reads.
    *buf = Some(
        unsafe { stream.alloc::<T>(len) }
            .map_err(|e| GpuError::alloc(e, len * std::mem::size_of::<T>()))?,
    );
    Ok(())
}

fn ensure_pinned(
    stream: &Arc<CudaStream>,
    buf: &mut Option<PinnedHostSlice<u8>>,
    n: usize,
    write_combined: bool,
) -> Result<(), GpuError> {
    if buf.as_ref().is_some_and(|b| b.len() >= n.max(1)) {
        return Ok(());
    }
    *buf = None;
    let len = (n + n / 4).max(1);
    // Write-combined memory is fast for the host to write and the device to read, and very
    // slow for the host to read: only for uploads.
    let flags = if write_combined {
        cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED
    } else {
        0
    };
    // SAFETY: the contents are uninitialised; we write before the device reads, and the
    // device writes before we read.
    *buf = Some(
        unsafe { stream.context().alloc_pinned_with_flags::<u8>(len, flags) }
            .map_err(|e| GpuError::alloc(e, len))?,
    );
    Ok(())
}

fn dev<T>(b: &mut Option<CudaSlice<T>>) -> Result<&mut CudaSlice<T>, GpuError> {
    b.as_mut()
        .ok_or_else(|| GpuError::NoDevice("buffer not allocated".into()))
}

/// Host-side plan of a batched resize: descriptors and coefficient tables (public so tests
/// can run the host build of the kernels on exactly what the device gets).
pub struct ResizePlan {
    pub descs: Vec<ResizeDesc>,
    /// hfirst, hcount (n*out_w each), vfirst, vcount (n*out_h each), then all weights.
    pub tables: Vec<i32>,
    pub hfirst: usize,
    pub hcount: usize,
    pub vfirst: usize,
    pub vcount: usize,
    pub weights: usize,
    pub src_bytes: usize,
    pub tmp_bytes: usize,
    pub max_tmp_rows: u32,
}

pub fn plan_resize(images: &[PreparedImage], out_w: u32, out_h: u32) -> ResizePlan {
    let n = images.len();
    let (ow, oh) = (out_w as usize, out_h as usize);
    let mut hfirst = Vec::with_capacity(n * ow);
    let mut hcount = Vec::with_capacity(n * ow);
    let mut vfirst = Vec::with_capacity(n * oh);
    let mut vcount = Vec::with_capacity(n * oh);
    let mut weights: Vec<i32> = Vec::new();
    let mut descs = Vec::with_capacity(n);
    let (mut src_off, mut tmp_off, mut max_rows) = (0usize, 0usize, 0u32);
    for im in images {
        // The same Rust code as the CPU reference computes the weights, so they are equal.
        let h = Coeffs::new(im.region.width, im.crop.x0, im.crop.x1, out_w);
        let v = Coeffs::new(im.region.height, im.crop.y0, im.crop.y1, out_h);
        let (row_lo, row_hi) = v.span();
        let rows = row_hi - row_lo;
        descs.push(ResizeDesc {
            src_off: src_off as u64,
            tmp_off: tmp_off as u64,
            hw_off: weights.len() as u64,
            vw_off: (weights.len() + h.weights.len()) as u64,
            src_w: im.region.width as i32,
            row_lo: row_lo as i32,
            tmp_rows: rows as i32,
            hk: h.ksize as i32,
            vk: v.ksize as i32,
            flip: i32::from(im.flip),
        });
        hfirst.extend(h.first.iter().map(|&x| x as i32));
        hcount.extend(h.count.iter().map(|&x| x as i32));
        vfirst.extend(v.first.iter().map(|&x| x as i32));
        vcount.extend(v.count.iter().map(|&x| x as i32));
        weights.extend_from_slice(&h.weights);
        weights.extend_from_slice(&v.weights);
        src_off += im.region.data.len();
        tmp_off += rows as usize * ow * 3;
        max_rows = max_rows.max(rows);
    }
    let mut tables = Vec::with_capacity(hfirst.len() * 2 + vfirst.len() * 2 + weights.len());
    let at = |t: &mut Vec<i32>, v: &[i32]| {
        let start = t.len();
        t.extend_from_slice(v);
        start
    };
    let hf = at(&mut tables, &hfirst);
    let hc = at(&mut tables, &hcount);
    let vf = at(&mut tables, &vfirst);
    let vc = at(&mut tables, &vcount);
    let w = at(&mut tables, &weights);
    ResizePlan {
        descs,
        tables,
        hfirst: hf,
        hcount: hc,
        vfirst: vf,
        vcount: vc,
        weights: w,
        src_bytes: src_off,
        tmp_bytes: tmp_off,
        max_tmp_rows: max_rows,
    }
}

pub fn mix_descs(plan: &MixPlan) -> Vec<MixDesc> {
    (0..plan.len())
        .map(|i| {
            let mut d = MixDesc {
                partner: plan.partner[i] as i32,
                lam: plan.lam[i],
                ..MixDesc::default()
            };
            if let Some(b) = plan.cut[i] {
                d.has_cut = 1;
                (d.y0, d.y1, d.x0, d.x1) = (b.y0 as i32, b.y1 as i32, b.x0 as i32, b.x1 as i32);
            }
            d
        })
        .collect()
}

/// Device-side time of each step of one batch (CUDA events), and the bytes moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuTimings {
    /// Host work before the first copy: coefficient tables, descriptors (not the packing).
    pub prepare_host_ms: f64,
    /// Packing into pinned memory + host-to-device copies.
    pub upload_ms: f64,
    pub resize_ms: f64,
    pub mix_normalize_ms: f64,
    pub stats_ms: f64,
    pub download_ms: f64,
    pub upload_bytes: usize,
    pub output_bytes: usize,
    pub total: Duration,
}

/// Batch ops on a GPU, with the CPU ops as the fallback when the device runs out of memory.
pub struct GpuBatchOps {
    device: Arc<GpuDevice>,
    slots: Vec<Mutex<Slot>>,
    cpu: CpuBatchOps,
}

impl GpuBatchOps {
    /// `slots` batches can be in flight at once (2 gives upload/compute overlap).
    pub fn new(device: Arc<GpuDevice>, slots: usize) -> Result<Self, GpuError> {
        let slots = (0..slots.max(1))
            .map(|_| {
                Ok(Mutex::new(Slot {
                    stream: device.ctx.new_stream()?,
                    stage_in: None,
                    stage_out: None,
                    src: None,
                    tmp: None,
                    resized: None,
                    out: None,
                    descs: None,
                    coeffs: None,
                    mix: None,
                    norm: None,
                    sums: None,
                }))
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(GpuBatchOps {
            device,
            slots,
            cpu: CpuBatchOps::default(),
        })
    }

    pub fn device_info(&self) -> &crate::GpuInfo {
        self.device.info()
    }

    /// A free slot, or (all busy) the first one once it frees up.
    fn acquire(&self) -> MutexGuard<'_, Slot> {
        for s in &self.slots {
            match s.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.slots[0].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the batch on the GPU.
    pub fn run_gpu(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
    ) -> Result<BatchOutput, GpuError> {
        self.run_gpu_timed(images, plan, spec).map(|(out, _)| out)
    }

    /// Runs the batch on the GPU and reports device-side times (CUDA events) per step.
    pub fn run_gpu_timed(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
    ) -> Result<(BatchOutput, GpuTimings), GpuError> {
        self.run_gpu_to(images, plan, spec, None)
    }

    /// A device ring for the CUDA IPC transport, on this device.
    pub fn ipc_ring(&self, slots: u32, slot_bytes: usize) -> Result<IpcRing, GpuError> {
        IpcRing::new(&self.device, slots, slot_bytes)
    }

    /// Runs the batch; with `sink`, the output tensor is copied into that ring slot on the
    /// device instead of downloaded (the returned tensor then has no data).
    pub fn run_gpu_to(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        sink: Option<(&IpcRing, u32)>,
    ) -> Result<(BatchOutput, GpuTimings), GpuError> {
        let n = images.len();
        if n > 65535 {
            return Err(GpuError::BatchTooLarge(n));
        }
        let (out_w, out_h) = (spec.size.width, spec.size.height);
        let hw = out_w as usize * out_h as usize;
        let out_bytes = n * hw * 3 * spec.output.dtype.size_bytes();
        let t0 = Instant::now();
        let rp = plan_resize(images, out_w, out_h);
        let mix = mix_descs(plan);
        let norm = NormalizeCoeffs::new(&spec.normalize);
        let norm_vals: Vec<f32> = norm.scale.iter().chain(norm.bias.iter()).copied().collect();

        let mut guard = self.acquire();
        let slot = &mut *guard;
        let stream = slot.stream.clone();
        let t_host = t0.elapsed();
        let ev = |s: &Arc<CudaStream>| -> Result<cudarc::driver::CudaEvent, GpuError> {
            let e = s.context().new_event(None)?;
            e.record(s)?;
            Ok(e)
        };
        ensure_pinned(&stream, &mut slot.stage_in, rp.src_bytes, true)?;
        ensure_pinned(&stream, &mut slot.stage_out, out_bytes, false)?;
        ensure_dev(&stream, &mut slot.src, rp.src_bytes)?;
        ensure_dev(&stream, &mut slot.tmp, rp.tmp_bytes)?;
        ensure_dev(&stream, &mut slot.resized, n * hw * 3)?;
        ensure_dev(&stream, &mut slot.out, out_bytes)?;
        ensure_dev(&stream, &mut slot.descs, n)?;
        ensure_dev(&stream, &mut slot.coeffs, rp.tables.len())?;
        ensure_dev(&stream, &mut slot.mix, n)?;
        ensure_dev(&stream, &mut slot.norm, 6)?;
        ensure_dev(&stream, &mut slot.sums, 12)?;

        let e_start = ev(&stream)?;
        // Pack the u8 crops into pinned memory, then one upload.
        {
            let stage = slot
                .stage_in
                .as_mut()
                .ok_or(GpuError::NoDevice("staging".into()))?;
            let host = stage.as_mut_slice()?;
            let mut at = 0;
            for im in images {
                host[at..at + im.region.data.len()].copy_from_slice(&im.region.data);
                at += im.region.data.len();
            }
        }
        {
            let stage = slot
                .stage_in
                .as_ref()
                .ok_or(GpuError::NoDevice("staging".into()))?;
            let host = &stage.as_slice()?[..rp.src_bytes.max(1).min(stage.len())];
            let src = dev(&mut slot.src)?;
            stream.memcpy_htod(host, &mut src.slice_mut(..host.len()))?;
        }
        stream.memcpy_htod(&rp.descs[..], &mut dev(&mut slot.descs)?.slice_mut(..n))?;
        let tl = rp.tables.len();
        stream.memcpy_htod(&rp.tables[..], &mut dev(&mut slot.coeffs)?.slice_mut(..tl))?;
        stream.memcpy_htod(&mix[..], &mut dev(&mut slot.mix)?.slice_mut(..n))?;
        stream.memcpy_htod(&norm_vals[..], &mut dev(&mut slot.norm)?.slice_mut(..6))?;
        stream.memset_zeros(dev(&mut slot.sums)?)?;

        let e_upload = ev(&stream)?;
        let ow = out_w as i32;
        let oh = out_h as i32;
        let (src, tmp, resized, out) = (
            slot.src.as_ref().ok_or(GpuError::NoDevice("src".into()))?,
            slot.tmp.as_mut().ok_or(GpuError::NoDevice("tmp".into()))?,
            slot.resized
                .as_mut()
                .ok_or(GpuError::NoDevice("resized".into()))?,
            slot.out.as_mut().ok_or(GpuError::NoDevice("out".into()))?,
        );
        let descs = slot
            .descs
            .as_ref()
            .ok_or(GpuError::NoDevice("descs".into()))?;
        let coeffs = slot
            .coeffs
            .as_ref()
            .ok_or(GpuError::NoDevice("coeffs".into()))?;
        let (hfirst, hcount) = (coeffs.slice(rp.hfirst..), coeffs.slice(rp.hcount..));
        let (vfirst, vcount, weights) = (
            coeffs.slice(rp.vfirst..),
            coeffs.slice(rp.vcount..),
            coeffs.slice(rp.weights..),
        );
        let d = &self.device;
        launch(
            &stream,
            &d.resize_h,
            grid(out_w * 3, rp.max_tmp_rows, n as u32),
            |a| {
                a.arg(src)
                    .arg(&mut *tmp)
                    .arg(descs)
                    .arg(&hfirst)
                    .arg(&hcount)
                    .arg(&weights)
                    .arg(&ow);
            },
        )?;
        launch(
            &stream,
            &d.resize_v,
            grid(out_w * 3, out_h, n as u32),
            |a| {
                a.arg(&*tmp)
                    .arg(&mut *resized)
                    .arg(descs)
                    .arg(&vfirst)
                    .arg(&vcount)
                    .arg(&weights)
                    .arg(&ow)
                    .arg(&oh);
            },
        )?;
        let e_resize = ev(&stream)?;
        let dtype = dtype_code(spec.output.dtype);
        let layout = layout_code(spec.output.layout);
        let mixd = slot.mix.as_ref().ok_or(GpuError::NoDevice("mix".into()))?;
        let normd = slot
            .norm
            .as_ref()
            .ok_or(GpuError::NoDevice("norm".into()))?;
        let (scale, bias) = (normd.slice(0..3), normd.slice(3..6));
        let sums = slot
            .sums
            .as_mut()
            .ok_or(GpuError::NoDevice("sums".into()))?;
        let count = (n * hw) as f64;
        {
            let mut sums_v = sums.slice_mut(0..9);
            launch(
                &stream,
                &d.mix_normalize,
                grid(out_w, out_h, n as u32),
                |a| {
                    a.arg(&*resized)
                        .arg(mixd)
                        .arg(&scale)
                        .arg(&bias)
                        .arg(&dtype)
                        .arg(&layout)
                        .arg(&mut *out)
                        .arg(&oh)
                        .arg(&ow)
                        .arg(&mut sums_v);
                },
            )?;
        }
        let e_mix = ev(&stream)?;
        {
            let (first9, mut last3) = sums.split_at_mut(9);
            let first9 = first9.as_view();
            launch(&stream, &d.abs_dev, grid(out_w, out_h, n as u32), |a| {
                a.arg(&*out)
                    .arg(&dtype)
                    .arg(&layout)
                    .arg(&oh)
                    .arg(&ow)
                    .arg(&count)
                    .arg(&first9)
                    .arg(&mut last3);
            })?;
        }
        let e_stats = ev(&stream)?;
        let stage_out = slot
            .stage_out
            .as_mut()
            .ok_or(GpuError::NoDevice("staging".into()))?;
        match sink {
            Some((ring, slot)) => {
                let (src, _sync) = out.device_ptr(&stream);
                ring.copy_into(&stream, src, out_bytes, slot)?;
            }
            None => stream.memcpy_dtoh(
                &out.slice(..out_bytes.max(1)),
                &mut stage_out.as_mut_slice()?[..out_bytes.max(1)],
            )?,
        }
        let mut host_sums = [0f64; 12];
        stream.memcpy_dtoh(&sums.slice(0..12), &mut host_sums[..])?;
        let e_done = ev(&stream)?;
        stream.synchronize()?;
        let data = if sink.is_some() {
            Vec::new()
        } else {
            stage_out.as_slice()?[..out_bytes].to_vec()
        };
        let stats = stats_from_sums(&host_sums, count);
        let ms = |a: &cudarc::driver::CudaEvent, b: &cudarc::driver::CudaEvent| {
            a.elapsed_ms(b).map(f64::from)
        };
        let timings = GpuTimings {
            prepare_host_ms: (t_host.as_secs_f64() * 1e3),
            upload_ms: ms(&e_start, &e_upload)?,
            resize_ms: ms(&e_upload, &e_resize)?,
            mix_normalize_ms: ms(&e_resize, &e_mix)?,
            stats_ms: ms(&e_mix, &e_stats)?,
            download_ms: ms(&e_stats, &e_done)?,
            upload_bytes: rp.src_bytes + rp.tables.len() * 4,
            output_bytes: out_bytes,
            total: t0.elapsed(),
        };
        let out = BatchOutput {
            tensor: Tensor {
                data,
                shape: tensor_shape(spec, n),
                dtype: spec.output.dtype,
                layout: spec.output.layout,
            },
            stats,
            resize: Duration::from_secs_f64((timings.upload_ms + timings.resize_ms) / 1e3),
            mix_normalize: Duration::from_secs_f64(timings.mix_normalize_ms / 1e3),
            stats_time: Duration::from_secs_f64(timings.stats_ms / 1e3),
        };
        Ok((out, timings))
    }
}

fn stats_from_sums(s: &[f64; 12], n: f64) -> BatchStats {
    let mut st = BatchStats::default();
    if n == 0.0 {
        return st;
    }
    for c in 0..3 {
        let mean = s[c] / n;
        st.mean[c] = mean as f32;
        st.std[c] = (s[3 + c] / n - mean * mean).max(0.0).sqrt() as f32;
        st.clipped[c] = (s[6 + c] / n) as f32;
        st.mad[c] = (s[9 + c] / n) as f32;
    }
    st
}

impl BatchOps for GpuBatchOps {
    fn device(&self) -> String {
        format!(
            "gpu:{} ({})",
            self.device.info.ordinal, self.device.info.name
        )
    }

    /// Total minus free memory of the device: ours plus that of other processes on it (the
    /// trainer's, for a sidecar), which is what an operator needs to see.
    fn device_memory_used(&self) -> Option<u64> {
        let (free, total) = self.device.ctx.mem_get_info().ok()?;
        Some(total.saturating_sub(free) as u64)
    }

    fn device_ring(
        &self,
        slots: u32,
        slot_bytes: usize,
    ) -> Option<augserve_core::Result<Arc<dyn augserve_core::DeviceRing>>> {
        Some(
            self.ipc_ring(slots, slot_bytes)
                .map(|r| Arc::new(r) as Arc<dyn augserve_core::DeviceRing>)
                .map_err(|e| augserve_core::Error::Backend(e.to_string())),
        )
    }

    /// No CPU fallback here: the output must land in device memory.
    fn run_into_ring(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        ring: &dyn augserve_core::DeviceRing,
        slot: u32,
    ) -> augserve_core::Result<BatchOutput> {
        let ring = ring.as_any().downcast_ref::<IpcRing>().ok_or_else(|| {
            augserve_core::Error::Backend("the ring was not made by this GPU backend".into())
        })?;
        self.run_gpu_to(images, plan, spec, Some((ring, slot)))
            .map(|(out, _)| out)
            .map_err(|e| augserve_core::Error::Backend(e.to_string()))
    }

    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
    ) -> augserve_core::Result<BatchOutput> {
        match self.run_gpu(images, plan, spec) {
            Ok(out) => Ok(out),
            Err(e) => {
                // Out of memory or a driver fault fails over to the CPU for this batch; the
                // result is the same up to one level of resize rounding.
                tracing::warn!(error = %e, images = images.len(), "GPU batch failed; running it on the CPU");
                self.cpu.run(images, plan, spec, pool)
            }
        }
    }
}

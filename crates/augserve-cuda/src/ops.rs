//! The GPU implementation of the batch ops: upload the prepared crops once (u8), resize,
//! mix + normalise and measure on the device, download the finished tensor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use augserve_core::decode::JpegInfo;
use augserve_core::ops::mix::{MixPlan, NormalizeCoeffs};
use augserve_core::ops::resize::Coeffs;
use augserve_core::ops::stats::BatchStats;
use augserve_core::pipeline::{
    cut_region, tensor_shape, BatchOps, BatchOutput, CpuBatchOps, DecodeCounts, DeferredDecode,
    DeviceDecoder, PreparedImage,
};
use augserve_core::SampleError;
use augserve_core::{PipelineSpec, Tensor};
use cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DeviceRepr, PinnedHostSlice, PushKernelArg,
};
use rayon::ThreadPool;

use crate::decode_check::CheckReport;
use crate::device::GpuDevice;
use crate::gpu_decode::{picks_gpu, route, BackendChoice, DecodeRoute, DecodeSplit, NvJpegBackend};
use crate::ipc::IpcRing;
use crate::jpeg_planes::{roi_for_header, Roi, RoiSupport};
use crate::kernels::{dtype_code, layout_code, ColorDesc, MixDesc, ResizeDesc};
use crate::launch::{elapsed_ms, grid, launch, timing_event};
use crate::nvjpeg::{GpuJpegDecoder, NvJpeg};
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
        .ok_or_else(|| GpuError::Internal("buffer not allocated".into()))
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

/// Where an image's region lies in the batch's source buffer: its top-left pixel's byte
/// offset, its size, and the row length (pixels) of the image it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeSource {
    pub offset: usize,
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
}

/// The packed layout of host regions: back to back, each its own pitch.
pub fn packed_sources(images: &[PreparedImage]) -> (Vec<ResizeSource>, usize) {
    let mut at = 0;
    let sources = images
        .iter()
        .map(|im| {
            let s = ResizeSource {
                offset: at,
                width: im.region.width,
                height: im.region.height,
                pitch: im.region.width,
            };
            at += im.region.data.len();
            s
        })
        .collect();
    (sources, at)
}

/// The resize plan for host regions packed back to back (see [`plan_resize_sources`]).
pub fn plan_resize(images: &[PreparedImage], out_w: u32, out_h: u32) -> ResizePlan {
    let (sources, bytes) = packed_sources(images);
    plan_resize_sources(images, &sources, bytes, out_w, out_h)
}

/// Where every image's pixels lie in a batch's source buffer: the host regions packed first
/// (`cpu_bytes`), then each deferred image's decoded part (`DecodeJob`, its ROI from
/// `plan_roi`) with its crop region inside it, and the colour jitter of those regions.
#[derive(Debug)]
struct SourceLayout {
    sources: Vec<ResizeSource>,
    jobs: Vec<DecodeJob>,
    colors: Vec<ColorDesc>,
    cpu_bytes: usize,
    src_bytes: usize,
}

fn layout_sources(
    images: &[PreparedImage],
    plan_roi: impl Fn(&DeferredDecode) -> Roi,
) -> SourceLayout {
    let (mut sources, cpu_bytes) = packed_sources(images);
    let mut jobs = Vec::new();
    let mut colors = Vec::new();
    let mut src_bytes = cpu_bytes;
    for (i, im) in images.iter().enumerate() {
        let Some(d) = im.deferred.as_deref() else {
            continue;
        };
        // The decoded part: the planned ROI if it holds the crop region, else the whole image.
        let (x, y, w, h) = d.region;
        let whole = Roi::full(d.info.width, d.info.height);
        let roi = Some(plan_roi(d))
            .filter(|r| {
                x >= r.x
                    && y >= r.y
                    && x + w <= r.x + r.width
                    && y + h <= r.y + r.height
                    && r.x + r.width <= whole.width
                    && r.y + r.height <= whole.height
            })
            .unwrap_or(whole);
        // The decoded part lies at src_bytes; the crop region inside it.
        let region_off =
            src_bytes + ((y - roi.y) as usize * roi.width as usize + (x - roi.x) as usize) * 3;
        sources[i] = ResizeSource {
            offset: region_off,
            width: w,
            height: h,
            pitch: roi.width,
        };
        jobs.push(DecodeJob {
            image: i,
            offset: src_bytes,
            roi,
        });
        if !d.color.is_identity() {
            colors.push(ColorDesc {
                offset: region_off as u64,
                width: w as i32,
                height: h as i32,
                brightness: d.color.brightness,
                contrast: d.color.contrast,
                saturation: d.color.saturation,
                pitch: roi.width as i32,
            });
        }
        src_bytes += roi.pixels() as usize * 3;
    }
    SourceLayout {
        sources,
        jobs,
        colors,
        cpu_bytes,
        src_bytes,
    }
}

/// The resize plan for `images` whose regions lie at `sources` in a buffer of `src_bytes`.
pub fn plan_resize_sources(
    images: &[PreparedImage],
    sources: &[ResizeSource],
    src_bytes: usize,
    out_w: u32,
    out_h: u32,
) -> ResizePlan {
    let n = images.len();
    let (ow, oh) = (out_w as usize, out_h as usize);
    let mut hfirst = Vec::with_capacity(n * ow);
    let mut hcount = Vec::with_capacity(n * ow);
    let mut vfirst = Vec::with_capacity(n * oh);
    let mut vcount = Vec::with_capacity(n * oh);
    let mut weights: Vec<i32> = Vec::new();
    let mut descs = Vec::with_capacity(n);
    let (mut tmp_off, mut max_rows) = (0usize, 0u32);
    for (im, src) in images.iter().zip(sources) {
        // The same Rust code as the CPU reference computes the weights, so they are equal.
        let h = Coeffs::new(src.width, im.crop.x0, im.crop.x1, out_w);
        let v = Coeffs::new(src.height, im.crop.y0, im.crop.y1, out_h);
        let (row_lo, row_hi) = v.span();
        let rows = row_hi - row_lo;
        descs.push(ResizeDesc {
            src_off: src.offset as u64,
            tmp_off: tmp_off as u64,
            hw_off: weights.len() as u64,
            vw_off: (weights.len() + h.weights.len()) as u64,
            src_w: src.width as i32,
            row_lo: row_lo as i32,
            tmp_rows: rows as i32,
            hk: h.ksize as i32,
            vk: v.ksize as i32,
            flip: i32::from(im.flip),
            src_pitch: src.pitch as i32,
        });
        hfirst.extend(h.first.iter().map(|&x| x as i32));
        hcount.extend(h.count.iter().map(|&x| x as i32));
        vfirst.extend(v.first.iter().map(|&x| x as i32));
        vcount.extend(v.count.iter().map(|&x| x as i32));
        weights.extend_from_slice(&h.weights);
        weights.extend_from_slice(&v.weights);
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
        src_bytes,
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
    /// Host: waiting for a free slot (another batch on it).
    pub slot_wait_ms: f64,
    /// Host: growing the slot's device and pinned buffers (zero once they fit).
    pub alloc_ms: f64,
    /// Host: waiting for the stream at the end of the batch.
    pub sync_wait_ms: f64,
    /// Host: after the device work, copying the output out of pinned memory.
    pub finish_host_ms: f64,
    /// nvJPEG's share, when the batch had GPU-decoded images.
    pub decode: Option<crate::nvjpeg::DecodeTimes>,
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

/// Where `GpuBatchOps::run_gpu_to` puts the output tensor.
pub enum OutputSink<'a> {
    /// A host buffer from the pool (`BatchOps::recycle` gives it back): the tensor's data.
    Vec,
    /// The caller's host memory, exactly the tensor's size (shared-memory delivery).
    Host(&'a mut [u8]),
    /// A slot of a CUDA IPC ring, on the device.
    Ring(&'a IpcRing, u32),
}

/// Batch ops on a GPU, with the CPU ops as the fallback when the device runs out of memory.
pub struct GpuBatchOps {
    device: Arc<GpuDevice>,
    slots: Vec<Mutex<Slot>>,
    cpu: CpuBatchOps,
    decode: Option<GpuDecode>,
}

/// GPU JPEG decoding: the nvJPEG decoder, the CPU/GPU split, and what happened (counts).
struct GpuDecode {
    decoder: Mutex<GpuJpegDecoder>,
    backend: NvJpegBackend,
    split: Mutex<DecodeSplit>,
    on_gpu: AtomicU64,
    fell_back: AtomicU64,
    routed_cpu: AtomicU64,
    /// The start-up check against the CPU decoder (passed, or decoding would be off).
    check: CheckReport,
    /// The layouts ROI decode is on for (`GpuJpegDecoder::check_roi` at start-up).
    roi: RoiSupport,
    /// Pixels nvJPEG decoded, and the pixels of those images whole (the ROI saving).
    decoded_pixels: AtomicU64,
    whole_pixels: AtomicU64,
}

/// One image the GPU decodes: its index in the batch, where its decoded part starts in the
/// source buffer, and which part of it is decoded.
#[derive(Debug, Clone, Copy)]
struct DecodeJob {
    image: usize,
    offset: usize,
    roi: Roi,
}

impl DeviceDecoder for GpuDecode {
    fn takes(&self, info: &JpegInfo, sample_id: u64) -> bool {
        if route(info, self.backend) != DecodeRoute::Gpu || self.check.refuses(info) {
            self.routed_cpu.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let share = self
            .split
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gpu_share();
        picks_gpu(sample_id, share)
    }

    fn observe_cpu(&self, images: usize, wall: Duration) {
        self.split
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(images, wall.as_secs_f64(), 0, 0.0);
    }
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
            decode: None,
        })
    }

    /// Turns on GPU JPEG decoding (nvJPEG, the hardware engine where the GPU has one): the
    /// pipeline then leaves the images nvJPEG takes undecoded, in the share `split` gives
    /// (tuned from measured rates by default, or fixed). Returns the backend in use (and why
    /// not the hardware engine), or why decoding stays on the CPU.
    pub fn enable_gpu_decode(&mut self, split: DecodeSplit) -> Result<BackendChoice, GpuError> {
        let nv = NvJpeg::load()?;
        let library = format!("{} {}", nv.library, nv.version_string());
        let mut decoder = GpuJpegDecoder::new(nv, &self.device, NvJpegBackend::Hardware)?;
        let choice = decoder.backend_choice().clone();
        let backend = choice.backend;
        if backend != NvJpegBackend::Hardware {
            tracing::warn!("nvJPEG: {}", choice.note);
        }
        // Decoded pixels must match the CPU decoder's before any batch relies on them.
        let check = decoder.check_against_cpu().map_err(GpuError::DecodeCheck)?;
        tracing::info!("nvJPEG ({library}) start-up check: {check}");
        let roi = decoder.check_roi();
        if roi.any() {
            tracing::info!("{roi}: only the part each crop needs is decoded");
        } else {
            tracing::info!("{roi}: images are decoded whole");
        }
        self.decode = Some(GpuDecode {
            decoder: Mutex::new(decoder),
            backend,
            split: Mutex::new(split),
            on_gpu: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
            routed_cpu: AtomicU64::new(0),
            check,
            roi,
            decoded_pixels: AtomicU64::new(0),
            whole_pixels: AtomicU64::new(0),
        });
        Ok(choice)
    }

    /// The part of deferred image `d` to decode: the MCU-aligned part around its crop region
    /// with ROI decode, else the whole image.
    fn plan_roi(&self, d: &DeferredDecode) -> Roi {
        match &self.decode {
            Some(gd) if gd.roi.allows(&d.info) => roi_for_header(&d.info, d.region),
            _ => Roi::full(d.info.width, d.info.height),
        }
    }

    /// Decodes the deferred images (`jobs`) into `src` on the GPU, each its ROI; what nvJPEG
    /// refuses, on the CPU (the same part cut out), uploaded to the same place. Images that
    /// fail both are returned as per-image errors.
    fn decode_deferred(
        &self,
        images: &[PreparedImage],
        jobs: &[DecodeJob],
        src: &mut CudaSlice<u8>,
        stream: &Arc<CudaStream>,
    ) -> Result<crate::nvjpeg::DecodeTimes, GpuError> {
        let Some(gd) = &self.decode else {
            return Err(GpuError::NoNvJpeg("GPU decoding is not enabled".into()));
        };
        let deferred = |i: usize| images[i].deferred.as_deref();
        let mut jpegs = Vec::with_capacity(jobs.len());
        let mut dims = Vec::with_capacity(jobs.len());
        for j in jobs {
            let d = deferred(j.image).ok_or(GpuError::NoNvJpeg("image not deferred".into()))?;
            jpegs.push(d.bytes.as_slice());
            dims.push((d.info.width, d.info.height));
        }
        let rois: Vec<Roi> = jobs.iter().map(|j| j.roi).collect();
        let offsets: Vec<usize> = jobs.iter().map(|j| j.offset).collect();
        let mut dec = gd.decoder.lock().unwrap_or_else(|p| p.into_inner());
        let decoded = |k: usize| {
            gd.on_gpu.fetch_add(1, Ordering::Relaxed);
            gd.decoded_pixels
                .fetch_add(rois[k].pixels(), Ordering::Relaxed);
            gd.whole_pixels.fetch_add(
                u64::from(dims[k].0) * u64::from(dims[k].1),
                Ordering::Relaxed,
            );
        };
        let t0 = Instant::now();
        let whole = dec.decode_into(&jpegs, &dims, &rois, src, &offsets);
        let times = dec.last_times();
        let mut failed = Vec::new();
        match whole {
            Ok(()) => {
                (0..jobs.len()).for_each(decoded);
                gd.split.lock().unwrap_or_else(|p| p.into_inner()).observe(
                    0,
                    0.0,
                    jobs.len(),
                    t0.elapsed().as_secs_f64(),
                );
            }
            Err(batch_err) => {
                // nvJPEG fails a batch as a whole: find the images it refuses one by one.
                tracing::debug!(error = %batch_err, images = jobs.len(), "nvJPEG refused a batch; decoding image by image");
                for k in 0..jobs.len() {
                    let one = dec.decode_into(
                        &jpegs[k..=k],
                        &dims[k..=k],
                        &rois[k..=k],
                        src,
                        &offsets[k..=k],
                    );
                    if one.is_ok() {
                        decoded(k);
                        continue;
                    }
                    gd.fell_back.fetch_add(1, Ordering::Relaxed);
                    let i = jobs[k].image;
                    let Some(d) = deferred(i) else { continue };
                    match d.decode_full() {
                        Ok(img) => {
                            let r = rois[k];
                            let part = cut_region(img, (r.x, r.y, r.width, r.height));
                            let end = offsets[k] + part.data.len();
                            stream
                                .memcpy_htod(&part.data[..], &mut src.slice_mut(offsets[k]..end))?;
                        }
                        Err(kind) => failed.push(SampleError {
                            sample_id: images[i].sample_id,
                            source_name: d.source_name.clone(),
                            kind,
                        }),
                    }
                }
            }
        }
        if failed.is_empty() {
            Ok(times)
        } else {
            Err(GpuError::DeferredFailed(failed))
        }
    }

    /// Colour jitter of GPU-decoded regions, in place: luma sums (for contrast), then the
    /// per-pixel LUT + saturation, the same integer arithmetic as the CPU path.
    fn color_on_device(
        &self,
        stream: &Arc<CudaStream>,
        src: &mut CudaSlice<u8>,
        colors: &[ColorDesc],
    ) -> Result<(), GpuError> {
        let m = colors.len();
        let descs = stream.clone_htod(colors)?;
        let mut sums = stream.alloc_zeros::<u64>(m)?;
        let most = colors
            .iter()
            .map(|c| c.width as u32 * c.height as u32)
            .max()
            .unwrap_or(1);
        // The kernels loop over their region (grid stride): 64 blocks per image is plenty.
        let cfg = grid(most.min(64 * crate::launch::BLOCK), 1, m as u32);
        let d = &self.device;
        launch(stream, &d.color_luma_sums, cfg, |a| {
            a.arg(&*src).arg(&descs).arg(&mut sums);
        })?;
        launch(stream, &d.color_apply, cfg, |a| {
            a.arg(&mut *src).arg(&descs).arg(&sums);
        })?;
        Ok(())
    }

    pub fn device_info(&self) -> &crate::GpuInfo {
        self.device.info()
    }

    /// One line: the device, compute capability, memory, driver and kernels' target.
    pub fn describe(&self) -> String {
        let i = self.device_info();
        format!(
            "{} (compute {}.{}, {:.0} GiB, driver CUDA {}.{}, kernels compiled to {})",
            self.device(),
            i.compute_capability.0,
            i.compute_capability.1,
            i.total_memory as f64 / (1u64 << 30) as f64,
            i.driver_cuda.0,
            i.driver_cuda.1,
            i.kernels
        )
    }

    /// With GPU decoding on: its start-up check against the CPU decoder and where ROI decode
    /// is used.
    pub fn gpu_decode_checks(&self) -> Option<String> {
        let d = self.decode.as_ref()?;
        Some(format!("start-up check: {}; {}", d.check, d.roi))
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
        self.run_gpu_to(images, plan, spec, OutputSink::Vec)
    }

    /// A device ring for the CUDA IPC transport, on this device.
    pub fn ipc_ring(&self, slots: u32, slot_bytes: usize) -> Result<IpcRing, GpuError> {
        IpcRing::new(&self.device, slots, slot_bytes)
    }

    /// Runs the batch and puts the output tensor where `sink` says: a recycled host buffer
    /// (the returned tensor's data), the caller's host memory, or a ring slot on the
    /// device instead of downloaded (the returned tensor then has no data).
    pub fn run_gpu_to(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        mut sink: OutputSink<'_>,
    ) -> Result<(BatchOutput, GpuTimings), GpuError> {
        let n = images.len();
        if n > 65535 {
            return Err(GpuError::BatchTooLarge(n));
        }
        let (out_w, out_h) = (spec.size.width, spec.size.height);
        let hw = out_w as usize * out_h as usize;
        let out_bytes = n * hw * 3 * spec.output.dtype.size_bytes();
        if let OutputSink::Host(out) = &sink {
            if out.len() != out_bytes {
                return Err(GpuError::Internal(format!(
                    "a {}-byte host output for a {out_bytes}-byte tensor",
                    out.len()
                )));
            }
        }
        let t0 = Instant::now();
        // Host regions first, packed; then each deferred image's full decoded size.
        let layout = layout_sources(images, |d| self.plan_roi(d));
        let SourceLayout {
            sources,
            jobs,
            colors,
            cpu_bytes,
            src_bytes,
        } = layout;
        let rp = plan_resize_sources(images, &sources, src_bytes, out_w, out_h);
        let mix = mix_descs(plan);
        let norm = NormalizeCoeffs::new(&spec.normalize);
        let norm_vals: Vec<f32> = norm.scale.iter().chain(norm.bias.iter()).copied().collect();

        let t_host = t0.elapsed();
        let mut guard = self.acquire();
        let slot = &mut *guard;
        let stream = slot.stream.clone();
        let t_slot = t0.elapsed();
        let ev = |s: &Arc<CudaStream>| timing_event(s);
        ensure_pinned(&stream, &mut slot.stage_in, cpu_bytes, true)?;
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
        let t_alloc = t0.elapsed();

        let e_start = ev(&stream)?;
        // Pack the u8 crops into pinned memory, then one upload.
        {
            let stage = slot
                .stage_in
                .as_mut()
                .ok_or(GpuError::Internal("staging".into()))?;
            pack_regions(&mut stage.as_mut_slice()?[..cpu_bytes], images);
        }
        {
            let stage = slot
                .stage_in
                .as_ref()
                .ok_or(GpuError::Internal("staging".into()))?;
            let src = dev(&mut slot.src)?;
            if cpu_bytes > 0 {
                let host = &stage.as_slice()?[..cpu_bytes];
                stream.memcpy_htod(host, &mut src.slice_mut(..cpu_bytes))?;
            }
        }
        let mut decode_times = None;
        if !jobs.is_empty() {
            // Straight into the source buffer, after the host regions: the resize reads the
            // decoded image where nvJPEG wrote it.
            decode_times =
                Some(self.decode_deferred(images, &jobs, dev(&mut slot.src)?, &stream)?);
            if !colors.is_empty() {
                self.color_on_device(&stream, dev(&mut slot.src)?, &colors)?;
            }
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
            slot.src.as_ref().ok_or(GpuError::Internal("src".into()))?,
            slot.tmp.as_mut().ok_or(GpuError::Internal("tmp".into()))?,
            slot.resized
                .as_mut()
                .ok_or(GpuError::Internal("resized".into()))?,
            slot.out.as_mut().ok_or(GpuError::Internal("out".into()))?,
        );
        let descs = slot
            .descs
            .as_ref()
            .ok_or(GpuError::Internal("descs".into()))?;
        let coeffs = slot
            .coeffs
            .as_ref()
            .ok_or(GpuError::Internal("coeffs".into()))?;
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
        let mixd = slot.mix.as_ref().ok_or(GpuError::Internal("mix".into()))?;
        let normd = slot
            .norm
            .as_ref()
            .ok_or(GpuError::Internal("norm".into()))?;
        let (scale, bias) = (normd.slice(0..3), normd.slice(3..6));
        let sums = slot
            .sums
            .as_mut()
            .ok_or(GpuError::Internal("sums".into()))?;
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
            .ok_or(GpuError::Internal("staging".into()))?;
        match &sink {
            OutputSink::Ring(ring, slot) => {
                let (src, _sync) = out.device_ptr(&stream);
                ring.copy_into(&stream, src, out_bytes, *slot)?;
            }
            OutputSink::Vec | OutputSink::Host(_) => stream.memcpy_dtoh(
                &out.slice(..out_bytes.max(1)),
                &mut stage_out.as_mut_slice()?[..out_bytes.max(1)],
            )?,
        }
        let mut host_sums = [0f64; 12];
        stream.memcpy_dtoh(&sums.slice(0..12), &mut host_sums[..])?;
        let e_done = ev(&stream)?;
        let t_sync = t0.elapsed();
        stream.synchronize()?;
        let t_synced = t0.elapsed();
        // Out of pinned memory into a recycled buffer or the caller's: a fresh 40-80 MB
        // allocation would cost a page fault per 4 KiB (55 ms a batch on an H200's host).
        let data = match &mut sink {
            OutputSink::Ring(..) => Vec::new(),
            OutputSink::Vec => {
                let mut data = self.cpu.buffers.take(out_bytes);
                copy_bytes(&mut data, &stage_out.as_slice()?[..out_bytes]);
                data
            }
            OutputSink::Host(out) => {
                copy_bytes(out, &stage_out.as_slice()?[..out_bytes]);
                Vec::new()
            }
        };
        let stats = stats_from_sums(&host_sums, count);
        let ms = elapsed_ms;
        let ms_between = |a: Duration, b: Duration| (b.saturating_sub(a)).as_secs_f64() * 1e3;
        let t_end = t0.elapsed();
        let timings = GpuTimings {
            prepare_host_ms: (t_host.as_secs_f64() * 1e3),
            slot_wait_ms: ms_between(t_host, t_slot),
            alloc_ms: ms_between(t_slot, t_alloc),
            sync_wait_ms: ms_between(t_sync, t_synced),
            finish_host_ms: ms_between(t_synced, t_end),
            decode: decode_times,
            upload_ms: ms(&e_start, &e_upload)?,
            resize_ms: ms(&e_upload, &e_resize)?,
            mix_normalize_ms: ms(&e_resize, &e_mix)?,
            stats_ms: ms(&e_mix, &e_stats)?,
            download_ms: ms(&e_stats, &e_done)?,
            upload_bytes: cpu_bytes + rp.tables.len() * 4,
            output_bytes: out_bytes,
            total: t_end,
        };
        tracing::debug!(target: "augserve_cuda::timing", "{timings}");
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

impl std::fmt::Display for GpuTimings {
    /// One line, `key=value` in milliseconds (the benchmarks' profile reads it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gpu batch: prepare={:.3} slot_wait={:.3} alloc={:.3} upload={:.3} resize={:.3} mix={:.3} stats={:.3} download={:.3} sync_wait={:.3} finish={:.3} total={:.3}",
            self.prepare_host_ms,
            self.slot_wait_ms,
            self.alloc_ms,
            self.upload_ms,
            self.resize_ms,
            self.mix_normalize_ms,
            self.stats_ms,
            self.download_ms,
            self.sync_wait_ms,
            self.finish_host_ms,
            self.total.as_secs_f64() * 1e3
        )?;
        if let Some(d) = &self.decode {
            write!(
                f,
                " nvjpeg_images={} nvjpeg_headers={:.3} nvjpeg_submit={:.3} nvjpeg={:.3} convert={:.3} nvjpeg_total={:.3}",
                d.images, d.headers_ms, d.submit_ms, d.nvjpeg_ms, d.convert_ms, d.total_ms
            )?;
        }
        Ok(())
    }
}

/// Threads for the host copies of a batch (packing the upload, the output out of pinned
/// memory): one thread moves about 3 GB/s on an H200's host, a few come near what the memory
/// gives. Their own threads, not the pipeline's pool: there the copies waited behind the next
/// batch's per-image work (the upload took 23 ms instead of 13).
const COPY_THREADS: usize = 4;

/// Copies each `(dst, src)` pair (equal lengths) on up to [`COPY_THREADS`] scoped threads,
/// in contiguous runs of about equal bytes.
fn copy_parallel(pairs: Vec<(&mut [u8], &[u8])>) {
    let total: usize = pairs.iter().map(|(d, _)| d.len()).sum();
    let threads = COPY_THREADS
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(total / (1 << 20)) // under 1 MiB a thread: not worth one
        .max(1);
    let copy = |(d, s): (&mut [u8], &[u8])| d.copy_from_slice(s);
    if threads == 1 {
        pairs.into_iter().for_each(copy);
        return;
    }
    let share = total.div_ceil(threads);
    let mut runs: Vec<Vec<(&mut [u8], &[u8])>> = vec![Vec::new()];
    let mut in_run = 0;
    for pair in pairs {
        if in_run >= share {
            runs.push(Vec::new());
            in_run = 0;
        }
        in_run += pair.0.len();
        if let Some(run) = runs.last_mut() {
            run.push(pair);
        }
    }
    std::thread::scope(|scope| {
        for run in runs {
            scope.spawn(move || run.into_iter().for_each(copy));
        }
    });
}

/// Copies `src` into `dst` (the same length) in 4 MiB pieces, in parallel.
fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    const PIECE: usize = 4 << 20;
    copy_parallel(dst.chunks_mut(PIECE).zip(src.chunks(PIECE)).collect());
}

/// Packs the images' host regions back to back into `host` (exactly their total size), in
/// parallel (100 MB a batch of 256 ImageNet-sized crops).
fn pack_regions(host: &mut [u8], images: &[PreparedImage]) {
    let mut parts = Vec::with_capacity(images.len());
    let mut rest = host;
    for im in images {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(im.region.data.len());
        parts.push((part, im.region.data.as_slice()));
        rest = tail;
    }
    copy_parallel(parts);
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

    fn device_decoder(&self) -> Option<&dyn DeviceDecoder> {
        self.decode.as_ref().map(|d| d as &dyn DeviceDecoder)
    }

    fn decode_counts(&self) -> Option<DecodeCounts> {
        let d = self.decode.as_ref()?;
        let whole = d.whole_pixels.load(Ordering::Relaxed);
        Some(DecodeCounts {
            on_device: d.on_gpu.load(Ordering::Relaxed),
            fell_back: d.fell_back.load(Ordering::Relaxed),
            kept_on_cpu: d.routed_cpu.load(Ordering::Relaxed),
            device_share: d
                .split
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gpu_share(),
            pixel_fraction: (whole > 0)
                .then(|| d.decoded_pixels.load(Ordering::Relaxed) as f64 / whole as f64),
        })
    }

    fn decode_report(&self) -> Option<String> {
        let d = self.decode.as_ref()?;
        let c = self.decode_counts()?;
        let (fixed, (cpu, gpu)) = {
            let split = d.split.lock().unwrap_or_else(|p| p.into_inner());
            (split.is_fixed(), split.rates())
        };
        let rate = |r: Option<f64>| r.map_or("-".to_string(), |v| format!("{v:.0}"));
        let roi = match c.pixel_fraction {
            Some(f) if d.roi.any() => {
                format!("{}: {:.0} % of the pixels decoded", d.roi, f * 100.0)
            }
            _ => d.roi.to_string(),
        };
        Some(format!(
            "GPU decode (nvJPEG {:?}): {} images on the GPU, {} fell back to the CPU, {} kept on the CPU by their headers; split {:.0} % GPU{} (rates: CPU {} images/s, GPU {} images/s); {roi}; start-up check: worst {:.3} levels from zune-jpeg",
            d.backend,
            c.on_device,
            c.fell_back,
            c.kept_on_cpu,
            c.device_share * 100.0,
            if fixed { ", fixed" } else { "" },
            rate(cpu),
            rate(gpu),
            d.check.worst,
        ))
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
        self.run_gpu_to(images, plan, spec, OutputSink::Ring(ring, slot))
            .map(|(out, _)| out)
            .map_err(augserve_core::Error::from)
    }

    fn recycle(&self, buf: Vec<u8>) {
        self.cpu.buffers.give(buf);
    }

    fn release_idle_memory(&self) {
        self.cpu.buffers.clear();
    }

    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
    ) -> augserve_core::Result<BatchOutput> {
        match self.run_gpu_to(images, plan, spec, OutputSink::Vec) {
            Ok((out, _)) => Ok(out),
            Err(e @ GpuError::DeferredFailed(_)) => Err(e.into()),
            Err(e) => {
                // Out of memory or a driver fault fails over to the CPU for this batch; the
                // result is the same up to one level of resize rounding.
                tracing::warn!(error = %e, images = images.len(), "GPU batch failed; running it on the CPU");
                self.cpu.run(images, plan, spec, pool)
            }
        }
    }

    fn run_into_host(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        out: &mut [u8],
    ) -> augserve_core::Result<BatchOutput> {
        match self.run_gpu_to(images, plan, spec, OutputSink::Host(&mut *out)) {
            Ok((done, _)) => Ok(done),
            Err(e @ GpuError::DeferredFailed(_)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, images = images.len(), "GPU batch failed; running it on the CPU");
                self.cpu.run_into_host(images, plan, spec, pool, out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augserve_core::decode::{jpeg_info, DecodeLimits};
    use augserve_core::image::RgbImage;
    use augserve_core::ops::color::ColorFactors;
    use augserve_core::ops::crop::CropBox;

    fn jpeg(w: u32, h: u32, sampling: jpeg_encoder::SamplingFactor) -> Vec<u8> {
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
        enc.set_sampling_factor(sampling);
        enc.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    fn host_image(id: u64, w: u32, h: u32) -> PreparedImage {
        let data = (0..w * h * 3).map(|i| (i as u64 * 13 + id) as u8).collect();
        PreparedImage {
            sample_id: id,
            label: 0,
            region: RgbImage::from_vec(w, h, data).unwrap(),
            crop: CropBox::full(w, h),
            flip: false,
            deferred: None,
            warning: None,
        }
    }

    fn deferred_image(id: u64, bytes: Vec<u8>, region: (u32, u32, u32, u32)) -> PreparedImage {
        let info = jpeg_info(&bytes).unwrap();
        PreparedImage {
            sample_id: id,
            label: 0,
            region: RgbImage::new(0, 0),
            crop: CropBox::full(region.2, region.3),
            flip: false,
            deferred: Some(Box::new(DeferredDecode {
                bytes,
                source_name: format!("image {id}"),
                info,
                region,
                color: ColorFactors {
                    brightness: 1.1,
                    contrast: 1.0,
                    saturation: 1.0,
                },
                limits: DecodeLimits::default(),
            })),
            warning: None,
        }
    }

    /// The batch's source buffer laid out on the host as the GPU path fills it (host regions
    /// uploaded, each deferred image's part decoded at its job's offset; here by zune-jpeg,
    /// cut to the part): every image's `ResizeSource` must then read exactly its CPU-path
    /// region, with and without ROI decode.
    #[test]
    fn parallel_packing_and_copying_equal_the_plain_loops() {
        let images: Vec<PreparedImage> = (0..9)
            .map(|i| host_image(i, 40 + i as u32 * 37, 31 + i as u32 * 11))
            .collect();
        let (_, bytes) = packed_sources(&images);
        let want: Vec<u8> = images
            .iter()
            .flat_map(|im| im.region.data.iter().copied())
            .collect();
        assert_eq!(want.len(), bytes);
        let mut host = vec![0u8; bytes];
        pack_regions(&mut host, &images);
        assert_eq!(host, want);
        // Several 4 MiB pieces and a partial one, over several threads; and tiny copies.
        for len in [(9 << 20) + 123, 5, 0] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut dst = vec![0u8; src.len()];
            copy_bytes(&mut dst, &src);
            assert!(dst == src, "{len} bytes");
        }
    }

    #[test]
    fn source_layout_reads_each_region_where_it_was_decoded() {
        use jpeg_encoder::SamplingFactor::{F_1_1, F_2_1, F_2_2};
        let images = vec![
            host_image(0, 40, 30),
            deferred_image(1, jpeg(200, 150, F_2_2), (37, 21, 101, 77)),
            host_image(2, 17, 9),
            deferred_image(3, jpeg(96, 80, F_2_1), (0, 0, 96, 80)),
            deferred_image(4, jpeg(131, 67, F_1_1), (70, 40, 61, 27)),
        ];
        for roi_on in [false, true] {
            let layout = layout_sources(&images, |d| {
                if roi_on {
                    roi_for_header(&d.info, d.region)
                } else {
                    Roi::full(d.info.width, d.info.height)
                }
            });
            let mut src = vec![0u8; layout.src_bytes];
            let mut at = 0;
            for im in &images {
                src[at..at + im.region.data.len()].copy_from_slice(&im.region.data);
                at += im.region.data.len();
            }
            assert_eq!(at, layout.cpu_bytes);
            for job in &layout.jobs {
                let d = images[job.image].deferred.as_deref().unwrap();
                let r = job.roi;
                let part = d.decode_full().unwrap().crop(r.x, r.y, r.width, r.height);
                src[job.offset..job.offset + part.data.len()].copy_from_slice(&part.data);
            }
            for (i, (im, s)) in images.iter().zip(&layout.sources).enumerate() {
                let want = match im.deferred.as_deref() {
                    Some(d) => {
                        let (x, y, w, h) = d.region;
                        d.decode_full().unwrap().crop(x, y, w, h)
                    }
                    None => im.region.clone(),
                };
                let mut got = Vec::new();
                for row in 0..s.height as usize {
                    let a = s.offset + row * s.pitch as usize * 3;
                    got.extend_from_slice(&src[a..a + s.width as usize * 3]);
                }
                assert_eq!(got, want.data, "image {i}, ROI decode {roi_on}");
            }
            // Colour jitter covers each deferred region where the resize reads it.
            assert_eq!(layout.colors.len(), 3);
            for (c, job) in layout.colors.iter().zip(&layout.jobs) {
                let s = layout.sources[job.image];
                assert_eq!((c.offset as usize, c.pitch as u32), (s.offset, s.pitch));
            }
            let parts: u64 = layout.jobs.iter().map(|j| j.roi.pixels()).sum();
            let whole = 200 * 150 + 96 * 80 + 131 * 67;
            if roi_on {
                assert!(parts < whole, "{parts} of {whole}");
            } else {
                assert_eq!(parts, whole);
            }
        }
    }
}

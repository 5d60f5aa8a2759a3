//! The GPU implementation of the batch ops: upload the prepared crops once (u8), resize,
//! mix + normalise and measure on the device, download the finished tensor. The host plan
//! is `plan.rs`, the buffers `staging.rs`, each device stage a function in `stages.rs`, GPU
//! JPEG decoding `jpeg/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use augserve_core::ops::mix::MixPlan;
use augserve_core::pipeline::{
    tensor_bytes, tensor_shape, BatchOps, BatchOutput, CpuBatchOps, DecodeCounts, Destination,
    DeviceDecoder, DeviceOutput, PreparedImage,
};
use augserve_core::{PipelineSpec, Tensor};
use cudarc::driver::PinnedHostSlice;
use rayon::ThreadPool;

use crate::device::GpuDevice;
use crate::host_output::{HostRegistration, RegisteredRanges};
use crate::ipc::IpcRing;
use crate::jpeg::stage::GpuDecode;
use crate::launch::{elapsed_ms, timing_event};
use crate::plan::{plan_batch, stats_from_sums, WeightsOn};
use crate::stages::{self, DownloadTo};
use crate::staging::{copy_bytes, BufferSizes, Slot, SlotPool};
use crate::weights_check::device_weights_differ;
use crate::GpuError;

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
    pub decode: Option<crate::jpeg::DecodeTimes>,
    /// Packing into pinned memory + host-to-device copies.
    pub upload_ms: f64,
    pub resize_ms: f64,
    pub mix_normalize_ms: f64,
    pub stats_ms: f64,
    pub download_ms: f64,
    /// The stream's time from the first upload to the last download (what the batch cost
    /// the GPU: kernels, copies, nvJPEG, and any gap between them).
    pub device_busy_ms: f64,
    pub upload_bytes: usize,
    pub output_bytes: usize,
    /// Bytes the host copied for the batch (`HostPlan::upload_copy_bytes`, plus the output
    /// out of pinned memory unless the device wrote it in place).
    pub host_copy_bytes: usize,
    pub total: Duration,
}

/// Batch ops on a GPU, with the CPU ops as the fallback when the device runs out of memory.
pub struct GpuBatchOps {
    pub(crate) device: Arc<GpuDevice>,
    slots: SlotPool<Slot>,
    pub(crate) cpu: CpuBatchOps,
    /// GPU JPEG decoding, when enabled (`jpeg/stage.rs`).
    pub(crate) decode: Option<GpuDecode>,
    /// Who computes the resize weights: the device, unless its weights failed the start-up
    /// check (`weights_check.rs`), with why.
    weights_on: (WeightsOn, Option<String>),
    /// Host output memory registered with the device (shared-memory rings): downloads go
    /// straight there.
    registered: Arc<RegisteredRanges>,
}

impl GpuBatchOps {
    /// `slots` batches can be in flight at once, each on its own stream (3: the upload of one,
    /// the kernels of another and the download of a third overlap).
    pub fn new(device: Arc<GpuDevice>, slots: usize) -> Result<Self, GpuError> {
        let slots = (0..slots.max(1))
            .map(|_| Ok(Slot::new(device.ctx.new_stream()?)))
            .collect::<Result<Vec<_>, GpuError>>()?;
        let slots = SlotPool::new(slots);
        let weights_on = Self::choose_weights(&device, &slots)?;
        Ok(GpuBatchOps {
            device,
            slots,
            cpu: CpuBatchOps::default(),
            decode: None,
            weights_on,
            registered: Arc::default(),
        })
    }

    /// The device's resize weights where they equal the host's on the start-up probe, else
    /// the host's (a driver fault in the check fails the backend, as any other would).
    fn choose_weights(
        device: &GpuDevice,
        slots: &SlotPool<Slot>,
    ) -> Result<(WeightsOn, Option<String>), GpuError> {
        let stream = slots.lock(0).stream().clone();
        Ok(match device_weights_differ(device, &stream)? {
            None => (WeightsOn::Device, None),
            Some(why) => {
                tracing::warn!("the device's resize weights differ from the CPU's ({why}); the host computes them");
                (WeightsOn::Host, Some(why))
            }
        })
    }

    pub fn device_info(&self) -> &crate::GpuInfo {
        self.device.info()
    }

    /// One line: the device, compute capability, memory, driver and kernels' target.
    pub fn describe(&self) -> String {
        let i = self.device_info();
        let weights = match &self.weights_on {
            (WeightsOn::Device, _) => "resize weights on the device".to_string(),
            (WeightsOn::Host, why) => format!(
                "resize weights on the host: the device's differed ({})",
                why.as_deref().unwrap_or("")
            ),
        };
        format!(
            "{} (compute {}.{}, {:.0} GiB, driver CUDA {}.{}, kernels compiled to {}; {weights})",
            self.device(),
            i.compute_capability.0,
            i.compute_capability.1,
            i.total_memory as f64 / (1u64 << 30) as f64,
            i.driver_cuda.0,
            i.driver_cuda.1,
            i.kernels
        )
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
        self.run_gpu_to(images, plan, spec, Destination::Owned)
    }

    /// A device ring for the CUDA IPC transport, on this device.
    pub fn ipc_ring(&self, slots: u32, slot_bytes: usize) -> Result<IpcRing, GpuError> {
        IpcRing::new(&self.device, slots, slot_bytes)
    }

    /// Runs the batch and puts the output tensor where `to` says: a recycled host buffer
    /// (the returned tensor's data), the caller's host memory, or a slot of an IPC ring made
    /// by this backend, on the device, never downloaded (the returned tensor then has no data).
    pub fn run_gpu_to(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        mut to: Destination<'_>,
    ) -> Result<(BatchOutput, GpuTimings), GpuError> {
        let n = images.len();
        if n > 65535 {
            return Err(GpuError::BatchTooLarge(n));
        }
        let out_bytes = tensor_bytes(spec, n);
        let ring = check_destination(&to, out_bytes)?;
        // A registered host destination (a shared-memory slot) takes the download itself.
        let in_place = matches!(&to, Destination::Host(out) if self.registered.contains(out));
        let t0 = Instant::now();
        // Host regions first, packed; then each deferred image's decoded part.
        let host = plan_batch(images, plan, spec, self.weights_on.0, |d| self.plan_roi(d));
        let t_host = t0.elapsed();
        let mut guard = self.slots.acquire();
        let slot = &mut *guard;
        let stream = slot.stream().clone();
        let t_slot = t0.elapsed();
        let hw = spec.size.width as usize * spec.size.height as usize;
        // Pinned output staging only for a download that lands there.
        let staged = !in_place && ring.is_none();
        let mut b = slot.buffers(&BufferSizes {
            stage_in: host.layout.cpu_bytes,
            stage_out: if staged { out_bytes } else { 0 },
            src: host.resize.src_bytes,
            tmp: host.resize.tmp_bytes,
            resized: n * hw * 3,
            out: out_bytes,
            images: n,
            coeffs: host.resize.table_len,
        })?;
        let t_alloc = t0.elapsed();
        let ev = || timing_event(&stream);
        let e_start = ev()?;
        stages::upload(&stream, &mut b, images, &host)?;
        let mut decode_times = None;
        if !host.layout.jobs.is_empty() {
            // Straight into the source buffer, after the host regions: the resize reads the
            // decoded image where nvJPEG wrote it.
            decode_times = Some(self.decode_deferred(images, &host.layout.jobs, b.src, &stream)?);
            if !host.layout.colors.is_empty() {
                self.color_on_device(&stream, b.src, &host.layout.colors)?;
            }
        }
        let e_upload = ev()?;
        let d = &self.device;
        stages::resize(d, &stream, &mut b, &host, spec, n)?;
        let e_resize = ev()?;
        stages::mix_normalize(d, &stream, &mut b, spec, n)?;
        let e_mix = ev()?;
        stages::statistics(d, &stream, &mut b, spec, n)?;
        let e_stats = ev()?;
        let mut host_sums = [0f64; 12];
        let target = match (&mut to, ring) {
            (_, Some((ring, slot))) => DownloadTo::Ring(ring, slot),
            (Destination::Host(out), None) if in_place => DownloadTo::Registered(out),
            _ => DownloadTo::Staging,
        };
        stages::download(&stream, &mut b, out_bytes, target, &mut host_sums)?;
        let e_done = ev()?;
        let t_sync = t0.elapsed();
        stream.synchronize()?;
        let t_synced = t0.elapsed();
        let data = match in_place {
            true => Vec::new(),
            false => self.copy_out(&mut to, b.stage_out, out_bytes)?,
        };
        let copied_out = match (&to, in_place) {
            (Destination::Owned, _) | (Destination::Host(_), false) => out_bytes,
            (Destination::Host(_), true) | (Destination::Device { .. }, _) => 0,
        };
        let t_end = t0.elapsed();
        let ms = elapsed_ms;
        let ms_between = |a: Duration, b: Duration| (b.saturating_sub(a)).as_secs_f64() * 1e3;
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
            device_busy_ms: ms(&e_start, &e_done)?,
            upload_bytes: host.layout.cpu_bytes
                + host.resize.tables.len() * 4
                + std::mem::size_of_val(&host.resize.descs[..]),
            output_bytes: out_bytes,
            host_copy_bytes: host.upload_copy_bytes(images) + copied_out,
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
            stats: stats_from_sums(&host_sums, (n * hw) as f64),
            resize: Duration::from_secs_f64((timings.upload_ms + timings.resize_ms) / 1e3),
            mix_normalize: Duration::from_secs_f64(timings.mix_normalize_ms / 1e3),
            stats_time: Duration::from_secs_f64(timings.stats_ms / 1e3),
            device_busy: Some(Duration::from_secs_f64(timings.device_busy_ms / 1e3)),
            host_copy_bytes: Some(timings.host_copy_bytes as u64),
        };
        Ok((out, timings))
    }

    /// Out of pinned memory into a recycled buffer or the caller's (nothing for a device
    /// destination): a fresh 40-80 MB allocation would cost a page fault per 4 KiB (55 ms a
    /// batch on an H200's host).
    fn copy_out(
        &self,
        to: &mut Destination<'_>,
        stage_out: &PinnedHostSlice<u8>,
        out_bytes: usize,
    ) -> Result<Vec<u8>, GpuError> {
        Ok(match to {
            Destination::Device { .. } => Vec::new(),
            Destination::Owned => {
                let mut data = self.cpu.buffers.take(out_bytes);
                copy_bytes(&mut data, &stage_out.as_slice()?[..out_bytes]);
                data
            }
            Destination::Host(out) => {
                copy_bytes(out, &stage_out.as_slice()?[..out_bytes]);
                Vec::new()
            }
        })
    }
}

/// Checks that `to` can take `out_bytes`, and finds the IPC ring of a device destination.
fn check_destination<'a>(
    to: &Destination<'a>,
    out_bytes: usize,
) -> Result<Option<(&'a IpcRing, u32)>, GpuError> {
    match to {
        Destination::Host(out) if out.len() != out_bytes => Err(GpuError::Internal(format!(
            "a {}-byte host output for a {out_bytes}-byte tensor",
            out.len()
        ))),
        Destination::Device { memory, slot } => {
            let ring = memory.as_any().downcast_ref::<IpcRing>().ok_or_else(|| {
                GpuError::Internal("the device output was not made by this backend".into())
            })?;
            Ok(Some((ring, *slot)))
        }
        Destination::Owned | Destination::Host(_) => Ok(None),
    }
}

impl std::fmt::Display for GpuTimings {
    /// One line, `key=value` in milliseconds (the benchmarks' profile reads it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gpu batch: prepare={:.3} slot_wait={:.3} alloc={:.3} upload={:.3} resize={:.3} mix={:.3} stats={:.3} download={:.3} sync_wait={:.3} finish={:.3} total={:.3} gpu_busy={:.3} host_copy_mb={:.3}",
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
            self.total.as_secs_f64() * 1e3,
            self.device_busy_ms,
            self.host_copy_bytes as f64 / 1e6
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

    /// Host weights are computed by the per-image workers, off the thread that plans
    /// batches; device weights need nothing of them.
    fn per_image_weights(&self) -> bool {
        self.weights_on.0 == WeightsOn::Host
    }

    fn decode_counts(&self) -> Option<DecodeCounts> {
        self.decode.as_ref().map(GpuDecode::counts)
    }

    fn batches_in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Every slot's output-shaped device buffers, for full batches; the ones the source
    /// images size (packed regions, decoded images) grow at the first batches, and pinned
    /// output staging at the first batch downloaded into it (every front but `bench`'s
    /// warm-up downloads into registered host memory or a device ring instead).
    fn reserve_for_batches(&self, spec: &PipelineSpec, batch_size: usize) {
        let started = Instant::now();
        let need = BufferSizes::for_output(spec, batch_size);
        for i in 0..self.slots.len() {
            if let Err(e) = self.slots.lock(i).buffers(&need) {
                tracing::warn!(error = %e, "could not size the GPU buffers at start-up; the first batches grow them");
                return;
            }
        }
        tracing::debug!(
            slots = self.slots.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "GPU output buffers sized"
        );
    }

    fn decode_report(&self) -> Option<String> {
        self.decode.as_ref().map(GpuDecode::report)
    }

    fn device_output(
        &self,
        slots: u32,
        slot_bytes: usize,
    ) -> Option<augserve_core::Result<Arc<dyn DeviceOutput>>> {
        Some(
            self.ipc_ring(slots, slot_bytes)
                .map(|r| Arc::new(r) as Arc<dyn DeviceOutput>)
                .map_err(|e| augserve_core::Error::Backend(e.to_string())),
        )
    }

    fn recycle(&self, buf: Vec<u8>) {
        self.cpu.buffers.give(buf);
    }

    /// Page-locks the memory for the device (`cuMemHostRegister`); where the driver refuses
    /// (a locked-memory limit, say), batches keep going through pinned staging memory.
    unsafe fn register_host_output(
        &self,
        start: *mut u8,
        len: usize,
    ) -> Option<augserve_core::pipeline::HostOutputRegistration> {
        let ctx = Some(self.device.ctx.clone());
        // SAFETY: the caller keeps the memory mapped until the registration is dropped.
        match unsafe { HostRegistration::new(ctx, start, len, self.registered.clone()) } {
            Ok(r) => Some(Box::new(r)),
            Err(e) => {
                tracing::info!(error = %e, bytes = len, "could not register host output memory with the device; its batches are copied out of pinned memory");
                None
            }
        }
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
        mut to: Destination<'_>,
    ) -> augserve_core::Result<BatchOutput> {
        let gpu_to = match &mut to {
            Destination::Owned => Destination::Owned,
            Destination::Host(out) => Destination::Host(out),
            // No CPU fallback here: the output must land in device memory.
            Destination::Device { memory, slot } => {
                let to = Destination::Device {
                    memory: *memory,
                    slot: *slot,
                };
                return self
                    .run_gpu_to(images, plan, spec, to)
                    .map(|(out, _)| out)
                    .map_err(Into::into);
            }
        };
        match self.run_gpu_to(images, plan, spec, gpu_to) {
            Ok((out, _)) => Ok(out),
            Err(e @ GpuError::DeferredFailed(_)) => Err(e.into()),
            Err(e) => {
                // Out of memory or a driver fault fails over to the CPU for this batch; the
                // result is the same up to one level of resize rounding.
                tracing::warn!(error = %e, images = images.len(), "GPU batch failed; running it on the CPU");
                self.cpu.run(images, plan, spec, pool, to)
            }
        }
    }
}

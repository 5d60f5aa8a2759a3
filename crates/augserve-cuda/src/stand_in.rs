//! A stand-in device for the GPU path's host side: the host steps of `GpuBatchOps::run_gpu_to`
//! and of GPU JPEG decoding, with host memory in place of pinned and device memory and no-op
//! kernels and decoder. It measures (and lets us cut) the host CPU time a GPU-decoded image
//! costs on a machine without a GPU: `augserve run --device stand-in`,
//! `benches/host_overhead.sh`. Its tensors hold no pixels (zeros): a benchmark, not a backend.
//!
//! What stands for what: a host-to-device copy from pageable memory (descriptors, tables) is a
//! host copy, since the driver stages pageable memory through its own pinned buffer; a copy
//! the DMA engine does from or to pinned memory (the packed upload, the download) costs the
//! host nothing and is left out; the copy out of pinned memory into the batch's buffer is the
//! same copy. A registered host destination (a shared-memory ring) is written in place, as
//! the device's DMA would: no copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use augserve_core::decode::JpegInfo;
use augserve_core::ops::mix::MixPlan;
use augserve_core::pipeline::{
    tensor_bytes, tensor_shape, BatchOps, BatchOutput, CpuBatchOps, DecodeCounts, DeferredDecode,
    Destination, DeviceDecoder, PreparedImage,
};
use augserve_core::{PipelineSpec, Tensor};
use rayon::ThreadPool;

use crate::host_output::{HostRegistration, RegisteredRanges};
use crate::jpeg::planes::roi_for_header;
use crate::jpeg::route::{route, DecodeRoute, NvJpegBackend};
use crate::kernels::{ColorDesc, MixDesc, ResizeDesc};
use crate::plan::{plan_batch, HostPlan, WeightsOn};
use crate::staging::{copy_bytes, pack_regions, SlotPool, BATCHES_IN_FLIGHT};

/// The GPU path's host side on host memory (module docs).
pub struct StandInOps {
    slots: SlotPool<HostSlot>,
    cpu: CpuBatchOps,
    on_device: AtomicU64,
    kept_on_cpu: AtomicU64,
    registered: std::sync::Arc<RegisteredRanges>,
}

/// What stands for a slot's pinned buffers and the device buffers the host writes.
#[derive(Default)]
struct HostSlot {
    stage_in: Vec<u8>,
    stage_out: Vec<u8>,
    /// The uploads from pageable memory.
    descs: Vec<ResizeDesc>,
    tables: Vec<i32>,
    mix: Vec<MixDesc>,
    norm: Vec<f32>,
    colors: Vec<ColorDesc>,
}

impl Default for StandInOps {
    fn default() -> Self {
        StandInOps {
            slots: SlotPool::new(
                (0..BATCHES_IN_FLIGHT)
                    .map(|_| HostSlot::default())
                    .collect(),
            ),
            cpu: CpuBatchOps::default(),
            on_device: AtomicU64::new(0),
            kept_on_cpu: AtomicU64::new(0),
            registered: Default::default(),
        }
    }
}

impl DeviceDecoder for StandInOps {
    /// Every image nvJPEG's CUDA backend takes (progressive ones too): all of an ordinary
    /// corpus, so the figure is per GPU-decoded image.
    fn takes(&self, info: &JpegInfo, _sample_id: u64) -> bool {
        let takes = route(info, NvJpegBackend::Cuda) == DecodeRoute::Gpu;
        let counter = if takes {
            &self.on_device
        } else {
            &self.kept_on_cpu
        };
        counter.fetch_add(1, Ordering::Relaxed);
        takes
    }

    fn observe_cpu(&self, _images: usize, _wall: Duration) {}
}

/// The host copy a pageable host-to-device copy of `items` costs.
fn upload_pageable<T: Copy>(to: &mut Vec<T>, items: &[T]) {
    to.clear();
    to.extend_from_slice(items);
}

impl StandInOps {
    pub fn new() -> Self {
        Self::default()
    }

    /// `run_gpu_to`'s host steps, in its order.
    fn run_host_steps(&self, images: &[PreparedImage], host: &HostPlan, slot: &mut HostSlot) {
        let cpu_bytes = host.layout.cpu_bytes;
        slot.stage_in.resize(cpu_bytes.max(slot.stage_in.len()), 0);
        pack_regions(&mut slot.stage_in[..cpu_bytes], images);
        upload_pageable(&mut slot.descs, &host.resize.descs);
        // Empty: the device computes the weights from the descriptors.
        upload_pageable(&mut slot.tables, &host.resize.tables);
        upload_pageable(&mut slot.mix, &host.mix);
        upload_pageable(&mut slot.norm, &host.norm);
        // GPU JPEG decoding: what `decode_deferred` gathers for nvJPEG (the decoder: no-op).
        let jpegs: Vec<&[u8]> = host.jpegs(images).collect();
        std::hint::black_box(&jpegs);
        upload_pageable(&mut slot.colors, &host.layout.colors);
    }
}

impl BatchOps for StandInOps {
    fn device(&self) -> String {
        "stand-in (the GPU path's host side; no pixels)".into()
    }

    fn device_decoder(&self) -> Option<&dyn DeviceDecoder> {
        Some(self)
    }

    /// As on a GPU whose weights passed the start-up check: the device computes them.
    fn per_image_weights(&self) -> bool {
        false
    }

    fn decode_counts(&self) -> Option<DecodeCounts> {
        Some(DecodeCounts {
            on_device: self.on_device.load(Ordering::Relaxed),
            kept_on_cpu: self.kept_on_cpu.load(Ordering::Relaxed),
            device_share: 1.0,
            ..DecodeCounts::default()
        })
    }

    fn recycle(&self, buf: Vec<u8>) {
        self.cpu.buffers.give(buf);
    }

    /// As the GPU backend: its slots' batches in flight. Their staging buffers for the
    /// output grow at the first batch that is copied out of them (none, when every batch
    /// goes to registered memory), as the GPU backend's pinned ones do.
    fn batches_in_flight(&self) -> usize {
        self.slots.len()
    }

    fn release_idle_memory(&self) {
        self.cpu.buffers.clear();
    }

    /// Records the range, as the GPU backend does after registering it.
    unsafe fn register_host_output(
        &self,
        start: *mut u8,
        len: usize,
    ) -> Option<augserve_core::pipeline::HostOutputRegistration> {
        // Page-locking faults every page in: what `cuMemHostRegister` costs the host.
        for offset in (0..len).step_by(4096) {
            // SAFETY: the caller vouches that the range is mapped and writable, and nothing
            // writes it while it is being registered; each byte is written back unchanged.
            unsafe {
                let p = start.add(offset);
                p.write_volatile(p.read_volatile());
            }
        }
        // SAFETY: no driver call without a context; the caller's contract covers the rest.
        let r = unsafe { HostRegistration::new(None, start, len, self.registered.clone()) };
        r.ok().map(|r| Box::new(r) as _)
    }

    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        _pool: &ThreadPool,
        to: Destination<'_>,
    ) -> augserve_core::Result<BatchOutput> {
        let t0 = Instant::now();
        let n = images.len();
        let out_bytes = tensor_bytes(spec, n);
        let roi = |d: &DeferredDecode| roi_for_header(&d.info, d.region);
        let host = plan_batch(images, plan, spec, WeightsOn::Device, roi);
        let mut slot = self.slots.acquire();
        self.run_host_steps(images, &host, &mut slot);
        // The download lands in pinned memory (stage_out), unless the destination is
        // registered or on the device; then the same copy out of it.
        let staged = match &to {
            Destination::Owned => true,
            Destination::Host(out) => !self.registered.contains(out),
            Destination::Device { .. } => false,
        };
        if staged && slot.stage_out.len() < out_bytes {
            slot.stage_out.resize(out_bytes, 0);
        }
        let mut copied_out = out_bytes;
        let data = match to {
            Destination::Owned => {
                let mut data = self.cpu.buffers.take(out_bytes);
                copy_bytes(&mut data, &slot.stage_out[..out_bytes]);
                data
            }
            // The GPU path's check: a host output of another size is refused.
            Destination::Host(out) if out.len() != out_bytes => {
                return Err(augserve_core::Error::Backend(format!(
                    "a {}-byte host output for a {out_bytes}-byte tensor",
                    out.len()
                )))
            }
            // The device would have written it there.
            Destination::Host(out) if self.registered.contains(out) => {
                copied_out = 0;
                Vec::new()
            }
            Destination::Host(out) => {
                copy_bytes(out, &slot.stage_out[..out_bytes]);
                Vec::new()
            }
            Destination::Device { .. } => {
                copied_out = 0;
                Vec::new()
            }
        };
        Ok(BatchOutput {
            tensor: Tensor {
                data,
                shape: tensor_shape(spec, n),
                dtype: spec.output.dtype,
                layout: spec.output.layout,
            },
            stats: Default::default(),
            resize: t0.elapsed(),
            mix_normalize: Duration::ZERO,
            stats_time: Duration::ZERO,
            device_busy: None,
            host_copy_bytes: Some((host.upload_copy_bytes(images) + copied_out) as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use augserve_core::image::RgbImage;
    use augserve_core::ops::crop::CropBox;

    fn batch(n: usize) -> Vec<PreparedImage> {
        (0..n as u64)
            .map(|i| PreparedImage {
                sample_id: i,
                label: 0,
                region: RgbImage::new(40, 30),
                crop: CropBox::full(40, 30),
                flip: false,
                deferred: None,
                warning: None,
                weights: None,
            })
            .collect()
    }

    /// The host copies a batch costs: the packed regions and descriptors always, the output
    /// out of pinned memory unless the destination is registered (written in place).
    #[test]
    fn a_registered_host_destination_costs_no_output_copy() {
        let ops = StandInOps::new();
        let spec = PipelineSpec::default();
        let pool = augserve_core::pipeline::worker_pool(1).unwrap();
        let images = batch(4);
        let plan = MixPlan::identity(4);
        let out_bytes = tensor_bytes(&spec, 4);
        let copied = |to: Destination<'_>| {
            let out = ops.run(&images, &plan, &spec, &pool, to).unwrap();
            out.host_copy_bytes.unwrap() as usize
        };
        let owned = copied(Destination::Owned);
        let mut slot = vec![0u8; out_bytes];
        let unregistered = copied(Destination::Host(&mut slot));
        assert_eq!(owned, unregistered);
        assert!(owned > out_bytes + 4 * 40 * 30 * 3, "{owned}");
        // SAFETY: `slot` outlives the registration (dropped below, before it).
        let registration = unsafe { ops.register_host_output(slot.as_mut_ptr(), slot.len()) };
        assert!(registration.is_some());
        let in_place = copied(Destination::Host(&mut slot));
        assert_eq!(in_place, owned - out_bytes);
        drop(registration);
        assert_eq!(copied(Destination::Host(&mut slot)), owned);
    }

    /// `augserve run` and the inline transport's buffers: registered once, so every batch
    /// written into one costs no output copy; a full batch's buffer takes a short last batch.
    #[test]
    fn output_slots_are_written_in_place() {
        let ops = StandInOps::new();
        let spec = PipelineSpec::default();
        let pool = augserve_core::pipeline::worker_pool(1).unwrap();
        let slots = augserve_core::buffers::OutputSlots::new(&ops, 2, tensor_bytes(&spec, 4));
        let images = batch(3);
        let plan = MixPlan::identity(3);
        let mut slot = slots.take(&|| false).unwrap();
        let mut to = Destination::Host(slot.buffer());
        let to = to.for_len(tensor_bytes(&spec, 3)).unwrap();
        let in_place = ops.run(&images, &plan, &spec, &pool, to).unwrap();
        let owned = ops
            .run(&images, &plan, &spec, &pool, Destination::Owned)
            .unwrap();
        assert_eq!(
            in_place.host_copy_bytes.unwrap() as usize,
            owned.host_copy_bytes.unwrap() as usize - tensor_bytes(&spec, 3)
        );
    }
}

//! The batch-ops seam: what a backend (CPU, GPU) does with a batch of prepared images, and
//! where the output tensor goes.

use std::sync::Arc;
use std::time::Duration;

use rayon::ThreadPool;

use super::cpu::CpuResize;
use super::deferred::{DecodeCounts, DeviceDecoder};
use super::prepare::PreparedImage;
use crate::batch::Tensor;
use crate::error::{Error, Result};
use crate::ops::mix::MixPlan;
use crate::ops::stats::BatchStats;
use crate::spec::{Layout, PipelineSpec};

/// The batch-wise stage: resize the prepared crops to the output size (flip fused), then
/// mix + normalise into the output tensor and compute its statistics.
pub trait BatchOps: Send + Sync {
    /// "cpu", or the GPU's name.
    fn device(&self) -> String;

    /// The device JPEG decoder, when this backend has one and it is enabled.
    fn device_decoder(&self) -> Option<&dyn DeviceDecoder> {
        None
    }

    /// Resize each image in the per-image stage with this CPU implementation (the CPU batch
    /// ops ask for it, so a large region is resized while in cache and never waits for its
    /// batch); `None`: the batch ops resize the regions (a GPU resizes on the device).
    fn per_image_resize(&self) -> Option<CpuResize> {
        None
    }

    /// Whether the per-image stage computes each image's resize weights
    /// ([`PreparedImage::weights`]) for these batch ops (a GPU backend uploads them).
    fn per_image_weights(&self) -> bool {
        false
    }

    /// A one-line report of where images were decoded (GPU decoding), for logs and summaries.
    fn decode_report(&self) -> Option<String> {
        None
    }

    /// Where images were decoded so far (GPU decoding), for metrics.
    fn decode_counts(&self) -> Option<DecodeCounts> {
        None
    }

    /// Device memory in use, in bytes, for the GPU backends (metrics); `None` on the CPU.
    fn device_memory_used(&self) -> Option<u64> {
        None
    }

    /// How many batches these ops take at once, each on its own thread
    /// ([`crate::pipeline::run_in_flight`]): a GPU's streams (upload, compute and download of
    /// three batches overlap). 1 on the CPU, whose batch ops use every core already.
    fn batches_in_flight(&self) -> usize {
        1
    }

    /// Sizes the buffers a batch of `batch_size` images under `spec` needs, before the first
    /// batch (a GPU's pinned and device output buffers, for every stream), so the first
    /// batches do not grow them. A failure here is left for the first batch to report.
    fn reserve_for_batches(&self, _spec: &PipelineSpec, _batch_size: usize) {}

    /// Takes back a finished batch's tensor buffer (`Pipeline::recycle`) for a later batch.
    fn recycle(&self, _buf: Vec<u8>) {}

    /// Frees the buffers kept for reuse (the server calls this when no stream is left).
    fn release_idle_memory(&self) {}

    /// Resizes, mixes, normalises and measures `images` under `plan`, writing the output
    /// tensor to `to`. For [`Destination::Owned`] the returned tensor holds the bytes; for
    /// the others it has the shape and dtype, and no data.
    fn run(
        &self,
        images: &[PreparedImage],
        plan: &MixPlan,
        spec: &PipelineSpec,
        pool: &ThreadPool,
        to: Destination<'_>,
    ) -> Result<BatchOutput>;

    /// Lets the device write the tensors of [`Destination::Host`] buffers inside
    /// `len` bytes at `start` (a shared-memory ring) straight there, skipping the copy out of
    /// the backend's staging memory, until the returned value is dropped. `None`: nothing
    /// changes (the CPU writes in place anyway, or the device could not register it).
    ///
    /// # Safety
    /// The memory must be mapped and writable, and stay mapped (neither unmapped nor freed
    /// nor remapped) until the returned value is dropped.
    unsafe fn register_host_output(
        &self,
        _start: *mut u8,
        _len: usize,
    ) -> Option<HostOutputRegistration> {
        None
    }

    /// Output memory of `slots` x `slot_bytes` bytes on this backend's device, which a
    /// process on the same device can map, for [`Destination::Device`]. `None`: this backend
    /// keeps no output on a device (the CPU).
    fn device_output(
        &self,
        _slots: u32,
        _slot_bytes: usize,
    ) -> Option<Result<Arc<dyn DeviceOutput>>> {
        None
    }
}

/// Host memory registered for direct device writes ([`BatchOps::register_host_output`]);
/// dropping it ends the registration. Drop it before the memory goes.
pub type HostOutputRegistration = Box<dyn Send + Sync>;

/// Where a batch's output tensor goes. The one type for it: the fronts (`augserve run`, the
/// server's transports, `bench`) choose one per batch, and the backends write there directly,
/// so no front copies a tensor the backend could have written in place.
pub enum Destination<'a> {
    /// A buffer the batch owns (`Batch::tensor.data`), taken from the backend's pool.
    Owned,
    /// The front of this host buffer (a shared-memory slot, say). Fails when the tensor does
    /// not fit.
    Host(&'a mut [u8]),
    /// Slot `slot` of output memory this backend made on its device
    /// ([`BatchOps::device_output`]); the tensor never reaches the host.
    Device {
        memory: &'a dyn DeviceOutput,
        slot: u32,
    },
}

impl Destination<'_> {
    /// The same destination for one attempt at a batch of `len` tensor bytes: a host buffer
    /// is cut to exactly `len` (an error when it is shorter).
    pub fn for_len(&mut self, len: usize) -> Result<Destination<'_>> {
        Ok(match self {
            Destination::Owned => Destination::Owned,
            Destination::Host(buf) => {
                let size = buf.len();
                Destination::Host(buf.get_mut(..len).ok_or_else(|| {
                    Error::Backend(format!(
                        "a {len}-byte batch does not fit the {size}-byte output buffer"
                    ))
                })?)
            }
            Destination::Device { memory, slot } => Destination::Device {
                memory: *memory,
                slot: *slot,
            },
        })
    }
}

/// Output memory on a backend's device, in equal slots, that another process on the same
/// device maps (the GPU backend's is a CUDA IPC ring). Core knows only its shape: the backend
/// reaches its own type through `as_any`, and the transport that shares it sends `handle`.
pub trait DeviceOutput: Send + Sync {
    fn slots(&self) -> u32;
    fn slot_bytes(&self) -> usize;
    /// What another process opens the memory with (64 bytes for CUDA IPC).
    fn handle(&self) -> Vec<u8>;
    /// The device's ordinal.
    fn device_ordinal(&self) -> i32;
    /// For the backend that made it, to reach its own type.
    fn as_any(&self) -> &dyn std::any::Any;
}

pub struct BatchOutput {
    pub tensor: Tensor,
    pub stats: BatchStats,
    pub resize: Duration,
    /// Mixing, normalisation and statistics (fused on the CPU).
    pub mix_normalize: Duration,
    /// Statistics, when a backend computes them separately.
    pub stats_time: Duration,
    /// How long the batch kept the device busy (a GPU: its stream's time from the first upload
    /// to the last download, by CUDA events: kernels, copies, nvJPEG, and any gap between
    /// them); `None` without a device.
    pub device_busy: Option<Duration>,
    /// Bytes the host copied for the batch on a device path: packing the upload into pinned
    /// memory, pageable uploads (which the driver stages), JPEG bytes for the device decoder,
    /// and the output out of pinned memory. `None` on the CPU, which writes in place.
    pub host_copy_bytes: Option<u64>,
}

/// Output tensor size in bytes for `n` images.
pub fn tensor_bytes(spec: &PipelineSpec, n: usize) -> usize {
    tensor_shape(spec, n).iter().product::<usize>() * spec.output.dtype.size_bytes()
}

/// Output tensor shape for `n` images.
pub fn tensor_shape(spec: &PipelineSpec, n: usize) -> [usize; 4] {
    let (h, w) = (spec.size.height as usize, spec.size.width as usize);
    match spec.output.layout {
        Layout::Nchw => [n, 3, h, w],
        Layout::Nhwc => [n, h, w, 3],
    }
}

//! The finished batch: the tensor and everything a trainer needs to use it.

use std::time::Duration;

use crate::error::SampleError;
use crate::ops::stats::BatchStats;
use crate::spec::{DType, Layout};

/// An image tensor as raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub data: Vec<u8>,
    /// `[N, C, H, W]` for NCHW, `[N, H, W, C]` for NHWC.
    pub shape: [usize; 4],
    pub dtype: DType,
    pub layout: Layout,
}

impl Tensor {
    /// The tensor's size in bytes, from its shape (a tensor written into a caller's buffer
    /// has no `data`).
    pub fn byte_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_bytes()
    }
}

/// Wall-clock time per stage. Per-image stages are summed over images (CPU time across
/// threads); `per_image_wall` is the wall time of the whole parallel per-image stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    pub read: Duration,
    pub decode: Duration,
    pub color: Duration,
    pub per_image_wall: Duration,
    /// The batch stage's resize, plus (CPU batch ops, which resize each image in the
    /// per-image stage) the per-image resizes summed over images.
    pub resize: Duration,
    pub mix_normalize: Duration,
    pub stats: Duration,
    pub total: Duration,
    /// How the batch's images were decoded.
    pub decoded: DecodeTally,
    /// How long the batch kept the GPU busy ([`crate::pipeline::BatchOutput::device_busy`]);
    /// zero on the CPU.
    pub device_busy: Duration,
    /// Bytes the host copied for the batch on a device path
    /// ([`crate::pipeline::BatchOutput::host_copy_bytes`]); zero on the CPU.
    pub host_copy_bytes: u64,
}

/// How many of a batch's images each decode path took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeTally {
    /// libjpeg-turbo, only the rows and iMCU columns of the crop's region.
    pub region: u32,
    /// Of `region`, decoded at 1/2-1/8 scale (the spec's `dct_scaling`).
    pub scaled: u32,
    /// Of `region`, progressive files: libjpeg-turbo reads every scan, each down to the
    /// region's last rows (the patched copy in vendor/turbojpeg-sys).
    pub progressive: u32,
    /// Decoded whole, then cut: zune-jpeg (what libjpeg-turbo declines), PNG, WebP.
    pub whole: u32,
    /// Left to the batch ops' device decoder (GPU decoding).
    pub device: u32,
}

impl DecodeTally {
    pub fn add(&mut self, o: &DecodeTally) {
        self.region += o.region;
        self.scaled += o.scaled;
        self.progressive += o.progressive;
        self.whole += o.whole;
        self.device += o.device;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Index of the batch within this rank's epoch.
    pub index: u64,
    pub tensor: Tensor,
    /// Each sample's own label.
    pub labels_a: Vec<i64>,
    /// The label of the sample mixed into it (equal to `labels_a` without mixing).
    pub labels_b: Vec<i64>,
    /// Weight of `labels_a`.
    pub lam: Vec<f32>,
    /// Mixed, smoothed one-hot targets `(N, num_classes)` when `mix.num_classes > 0`.
    pub soft_targets: Option<Vec<f32>>,
    pub sample_ids: Vec<u64>,
    /// Images that failed and were left out.
    pub errors: Vec<SampleError>,
    /// Damaged images kept in the batch (`on_damaged = accept`), and what was wrong.
    pub warnings: Vec<SampleError>,
    pub stats: BatchStats,
    pub timings: StageTimings,
    /// Which device did the batch ops ("cpu", or the GPU's name).
    pub device: String,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.sample_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sample_ids.is_empty()
    }
}

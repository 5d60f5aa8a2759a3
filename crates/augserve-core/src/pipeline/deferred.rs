//! The one seam for images a device decodes (GPU JPEG decoding): the per-image stage leaves
//! them encoded ([`DeferredDecode`]) when the backend's [`DeviceDecoder`] takes them, and the
//! batch ops decode them on the device, or on the CPU when the device refuses one.

use std::time::Duration;

use crate::decode::{decode_jpeg, DecodeLimits};
use crate::error::SampleErrorKind;
use crate::image::RgbImage;
use crate::ops::color::ColorFactors;

/// An image left encoded for the batch ops' device decoder, with what the CPU path would
/// have done to it after decoding: cut `region` (x, y, w, h) out of the full image and apply
/// `color` to that region. `crop` of the image is relative to the region, as on the CPU path.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredDecode {
    pub bytes: Vec<u8>,
    pub source_name: String,
    /// The JPEG header: full image size, sampling (what the device decoder plans with).
    pub info: crate::decode::JpegInfo,
    /// The part the CPU path would cut (x, y, width, height), from the crop box.
    pub region: (u32, u32, u32, u32),
    pub color: ColorFactors,
    /// The pipeline's decode limits, for a CPU fallback.
    pub limits: DecodeLimits,
}

impl DeferredDecode {
    /// The whole image decoded on the CPU (`decode_jpeg`), checked against the header's size:
    /// the fallback for what a device decoder refuses.
    pub fn decode_full(&self) -> std::result::Result<RgbImage, SampleErrorKind> {
        let img = decode_jpeg(&self.bytes, &self.limits)?;
        if (img.width, img.height) != (self.info.width, self.info.height) {
            return Err(SampleErrorKind::Decode(format!(
                "decoded size {}x{} differs from the header's {}x{}",
                img.width, img.height, self.info.width, self.info.height
            )));
        }
        Ok(img)
    }
}

/// Where images were decoded, since the device decoder was enabled.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecodeCounts {
    /// Decoded by the device decoder.
    pub on_device: u64,
    /// Left to the device, refused there, decoded on the CPU at the batch stage.
    pub fell_back: u64,
    /// Kept on the CPU by their headers (formats the device decoder does not take).
    pub kept_on_cpu: u64,
    /// The share of eligible images currently sent to the device (the tuned split).
    pub device_share: f64,
    /// Pixels decoded over the pixels of the whole images (below 1 with ROI decode).
    pub pixel_fraction: Option<f64>,
}

/// A device decoder the per-image stage can leave images to (GPU JPEG decoding): it says,
/// from the headers, which images it takes, and learns the CPU's decode rate to balance the
/// split.
pub trait DeviceDecoder: Send + Sync {
    /// Whether the device decodes this image (route + the current CPU/GPU split).
    /// `sample_id` makes the choice a function of the image, not of thread timing.
    fn takes(&self, info: &crate::decode::JpegInfo, sample_id: u64) -> bool;
    /// The CPU workers decoded `images` in `wall` (per-image stage wall time).
    fn observe_cpu(&self, images: usize, wall: Duration);
}

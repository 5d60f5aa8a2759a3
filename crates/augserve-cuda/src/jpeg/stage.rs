//! The batch stage of GPU JPEG decoding: the images the per-image stage deferred are decoded
//! by nvJPEG straight into the batch's source buffer (each its ROI), jittered in colour on
//! the device, and counted; `GpuDecode` is also the `DeviceDecoder` the per-image stage asks
//! which images to leave encoded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use augserve_core::decode::JpegInfo;
use augserve_core::pipeline::{
    cut_region, DecodeCounts, DeferredDecode, DeviceDecoder, PreparedImage,
};
use augserve_core::SampleError;
use cudarc::driver::{CudaSlice, CudaStream, PushKernelArg};

use super::check::CheckReport;
use super::planes::{roi_for_header, Roi, RoiSupport};
use super::route::{picks_gpu, route, BackendChoice, DecodeRoute, DecodeSplit, NvJpegBackend};
use super::{DecodeTimes, GpuJpegDecoder, NvJpeg};
use crate::kernels::{ColorDesc, Kernel};
use crate::launch::{grid, launch};
use crate::{GpuBatchOps, GpuError};

/// GPU JPEG decoding: the nvJPEG decoder, the CPU/GPU split, and what happened (counts).
pub(crate) struct GpuDecode {
    pub(crate) decoder: Mutex<GpuJpegDecoder>,
    pub(crate) backend: NvJpegBackend,
    pub(crate) split: Mutex<DecodeSplit>,
    pub(crate) on_gpu: AtomicU64,
    pub(crate) fell_back: AtomicU64,
    pub(crate) routed_cpu: AtomicU64,
    /// The start-up check against the CPU decoder (passed, or decoding would be off).
    pub(crate) check: CheckReport,
    /// The layouts ROI decode is on for (`GpuJpegDecoder::check_roi` at start-up).
    pub(crate) roi: RoiSupport,
    /// Pixels nvJPEG decoded, and the pixels of those images whole (the ROI saving).
    pub(crate) decoded_pixels: AtomicU64,
    pub(crate) whole_pixels: AtomicU64,
}

/// One image the GPU decodes: its index in the batch, where its decoded part starts in the
/// source buffer, and which part of it is decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeJob {
    pub(crate) image: usize,
    pub(crate) offset: usize,
    pub(crate) roi: Roi,
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

impl GpuDecode {
    /// Where images were decoded so far, for metrics.
    pub(crate) fn counts(&self) -> DecodeCounts {
        let whole = self.whole_pixels.load(Ordering::Relaxed);
        DecodeCounts {
            on_device: self.on_gpu.load(Ordering::Relaxed),
            fell_back: self.fell_back.load(Ordering::Relaxed),
            kept_on_cpu: self.routed_cpu.load(Ordering::Relaxed),
            device_share: self
                .split
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .gpu_share(),
            pixel_fraction: (whole > 0)
                .then(|| self.decoded_pixels.load(Ordering::Relaxed) as f64 / whole as f64),
        }
    }

    /// One line for logs and summaries: where images were decoded, the split, ROI, the check.
    pub(crate) fn report(&self) -> String {
        let (d, c) = (self, self.counts());
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
        format!(
            "GPU decode (nvJPEG {:?}): {} images on the GPU, {} fell back to the CPU, {} kept on the CPU by their headers; split {:.0} % GPU{} (rates: CPU {} images/s, GPU {} images/s); {roi}; start-up check: worst {:.3} levels from the CPU decoder",
            d.backend,
            c.on_device,
            c.fell_back,
            c.kept_on_cpu,
            c.device_share * 100.0,
            if fixed { ", fixed" } else { "" },
            rate(cpu),
            rate(gpu),
            d.check.worst,
        )
    }
}

impl GpuBatchOps {
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
    pub(crate) fn plan_roi(&self, d: &DeferredDecode) -> Roi {
        match &self.decode {
            Some(gd) if gd.roi.allows(&d.info) => roi_for_header(&d.info, d.region),
            _ => Roi::full(d.info.width, d.info.height),
        }
    }

    /// Decodes the deferred images (`jobs`) into `src` on the GPU, each its ROI; what nvJPEG
    /// refuses, on the CPU (the same part cut out), uploaded to the same place. Images that
    /// fail both are returned as per-image errors.
    pub(crate) fn decode_deferred(
        &self,
        images: &[PreparedImage],
        jobs: &[DecodeJob],
        src: &mut CudaSlice<u8>,
        stream: &Arc<CudaStream>,
    ) -> Result<DecodeTimes, GpuError> {
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
    pub(crate) fn color_on_device(
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
        launch(stream, d.kernel(Kernel::ColorLumaSums), cfg, |a| {
            a.arg(&*src).arg(&descs).arg(&mut sums);
        })?;
        launch(stream, d.kernel(Kernel::ColorApply), cfg, |a| {
            a.arg(&mut *src).arg(&descs).arg(&sums);
        })?;
        Ok(())
    }

    /// With GPU decoding on: its start-up check against the CPU decoder and where ROI decode
    /// is used.
    pub fn gpu_decode_checks(&self) -> Option<String> {
        let d = self.decode.as_ref()?;
        Some(format!("start-up check: {}; {}", d.check, d.roi))
    }
}

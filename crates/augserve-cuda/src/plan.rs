//! Host-side plans of a GPU batch, pure arithmetic tested on the CPU: where every image's
//! pixels lie in the source buffer (host regions packed, GPU-decoded parts after them), the
//! resize descriptors and coefficient tables, the mixing descriptors, and the statistics
//! from the device's sums.

use augserve_core::ops::mix::{MixPlan, NormalizeCoeffs};
use augserve_core::ops::resize::{AxisExtent, Coeffs, ResizeWeights};
use augserve_core::ops::stats::BatchStats;
use augserve_core::pipeline::{DeferredDecode, PreparedImage};
use augserve_core::PipelineSpec;

use crate::jpeg::planes::Roi;
use crate::jpeg::stage::DecodeJob;
use crate::kernels::{ColorDesc, MixDesc, ResizeDesc};

/// Host-side plan of a batched resize: descriptors and coefficient tables (public so tests
/// can run the host build of the kernels on exactly what the device gets).
pub struct ResizePlan {
    pub descs: Vec<ResizeDesc>,
    /// hfirst, hcount (n*out_w each), vfirst, vcount (n*out_h each), then all weights; empty
    /// when the device computes them (`weights_on`).
    pub tables: Vec<i32>,
    /// The table's length in i32s, on the host or the device.
    pub table_len: usize,
    pub weights_on: WeightsOn,
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
pub fn plan_resize(
    images: &[PreparedImage],
    out_w: u32,
    out_h: u32,
    weights_on: WeightsOn,
) -> ResizePlan {
    let (sources, bytes) = packed_sources(images);
    plan_resize_sources(images, &sources, bytes, out_w, out_h, weights_on)
}

/// Where every image's pixels lie in a batch's source buffer: the host regions packed first
/// (`cpu_bytes`), then each deferred image's decoded part (`DecodeJob`, its ROI from
/// `plan_roi`) with its crop region inside it, and the colour jitter of those regions.
#[derive(Debug)]
pub(crate) struct SourceLayout {
    pub sources: Vec<ResizeSource>,
    pub jobs: Vec<DecodeJob>,
    pub colors: Vec<ColorDesc>,
    pub cpu_bytes: usize,
    pub src_bytes: usize,
}

pub(crate) fn layout_sources(
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

/// Who computes a GPU batch's resize weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsOn {
    /// The `resize_weights` kernel, from the descriptors: the host works out only each
    /// axis's taps and span ([`AxisExtent`]) and uploads no table.
    Device,
    /// The host, by the CPU reference's code (the per-image workers, or the plan), uploaded
    /// as a table: where the device's weights failed the start-up check.
    Host,
}

/// The resize plan for `images` whose regions lie at `sources` in a buffer of `src_bytes`.
pub fn plan_resize_sources(
    images: &[PreparedImage],
    sources: &[ResizeSource],
    src_bytes: usize,
    out_w: u32,
    out_h: u32,
    weights_on: WeightsOn,
) -> ResizePlan {
    let n = images.len();
    let (ow, oh) = (out_w as usize, out_h as usize);
    // One table: hfirst, hcount (n*ow each), vfirst, vcount (n*oh each), then the weights,
    // image by image. Written here in place (host weights), or on the device.
    let (hf, hc, vf, vc, w) = (
        0,
        n * ow,
        2 * n * ow,
        2 * n * ow + n * oh,
        2 * (n * ow + n * oh),
    );
    let mut tables = match weights_on {
        WeightsOn::Host => vec![0i32; w],
        WeightsOn::Device => Vec::new(),
    };
    let mut descs = Vec::with_capacity(n);
    let (mut tmp_off, mut max_rows, mut table_len) = (0usize, 0u32, w);
    for (i, (im, src)) in images.iter().zip(sources).enumerate() {
        let c = im.crop;
        let (hk, vk, row_lo, row_hi) = match weights_on {
            WeightsOn::Device => {
                let h = AxisExtent::new(src.width, c.x0, c.x1, out_w);
                let v = AxisExtent::new(src.height, c.y0, c.y1, out_h);
                (h.ksize, v.ksize, v.lo, v.hi)
            }
            WeightsOn::Host => {
                let (h, v) = host_weights(im, src, out_w, out_h);
                let (put, t) = (put_u32s, &mut tables);
                put(t, hf + i * ow, &h.first);
                put(t, hc + i * ow, &h.count);
                put(t, vf + i * oh, &v.first);
                put(t, vc + i * oh, &v.count);
                t.extend_from_slice(&h.weights);
                t.extend_from_slice(&v.weights);
                let (lo, hi) = v.span();
                (h.ksize, v.ksize, lo, hi)
            }
        };
        let rows = row_hi - row_lo;
        let hw_off = table_len - w;
        descs.push(ResizeDesc {
            src_off: src.offset as u64,
            tmp_off: tmp_off as u64,
            hw_off: hw_off as u64,
            vw_off: (hw_off + ow * hk) as u64,
            src_w: src.width as i32,
            row_lo: row_lo as i32,
            tmp_rows: rows as i32,
            hk: hk as i32,
            vk: vk as i32,
            flip: i32::from(im.flip),
            src_pitch: src.pitch as i32,
            src_h: src.height as i32,
            crop_x0: c.x0,
            crop_x1: c.x1,
            crop_y0: c.y0,
            crop_y1: c.y1,
        });
        table_len += ow * hk + oh * vk;
        tmp_off += rows as usize * ow * 3;
        max_rows = max_rows.max(rows);
    }
    ResizePlan {
        descs,
        tables,
        table_len,
        weights_on,
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

/// An image's weights on the host: those the per-image stage computed
/// (`PerImageWork::weights`) where they are for this crop and size, else computed here, by
/// the CPU reference's code either way.
fn host_weights<'a>(
    im: &'a PreparedImage,
    src: &ResizeSource,
    out_w: u32,
    out_h: u32,
) -> (std::borrow::Cow<'a, Coeffs>, std::borrow::Cow<'a, Coeffs>) {
    use std::borrow::Cow;
    let key = (src.width, src.height, im.crop, out_w, out_h);
    match im.weights.as_deref().filter(|w| w.key == key) {
        Some(w) => (Cow::Borrowed(&w.h), Cow::Borrowed(&w.v)),
        None => {
            let w = ResizeWeights::new(src.width, src.height, im.crop, out_w, out_h);
            (Cow::Owned(w.h), Cow::Owned(w.v))
        }
    }
}

fn put_u32s(t: &mut [i32], at: usize, v: &[u32]) {
    for (d, &x) in t[at..at + v.len()].iter_mut().zip(v) {
        *d = x as i32;
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

/// Everything the host works out for a batch before the device starts.
pub(crate) struct HostPlan {
    pub layout: SourceLayout,
    pub resize: ResizePlan,
    pub mix: Vec<MixDesc>,
    /// Normalisation scale (3) then bias (3).
    pub norm: Vec<f32>,
}

impl HostPlan {
    /// The files of the images the device decodes, in the decode jobs' order.
    pub(crate) fn jpegs<'a>(
        &'a self,
        images: &'a [PreparedImage],
    ) -> impl Iterator<Item = &'a [u8]> {
        self.layout
            .jobs
            .iter()
            .filter_map(|j| images[j.image].deferred.as_deref())
            .map(|d| d.bytes.as_slice())
    }

    /// The bytes the host copies to send this plan's batch to the device: the CPU-decoded
    /// regions packed into pinned memory, and what goes from pageable memory (descriptors,
    /// tables, mixing, normalisation, colour descriptors, the JPEG files for nvJPEG), which
    /// the driver stages through its own pinned buffer.
    pub(crate) fn upload_copy_bytes(&self, images: &[PreparedImage]) -> usize {
        let jpeg_bytes: usize = self.jpegs(images).map(<[u8]>::len).sum();
        self.layout.cpu_bytes
            + std::mem::size_of_val(&self.resize.descs[..])
            + std::mem::size_of_val(&self.resize.tables[..])
            + std::mem::size_of_val(&self.mix[..])
            + std::mem::size_of_val(&self.norm[..])
            + std::mem::size_of_val(&self.layout.colors[..])
            + jpeg_bytes
    }
}

/// The host plan of `images` under `plan` and `spec`; `plan_roi` picks each deferred
/// image's decoded part.
pub(crate) fn plan_batch(
    images: &[PreparedImage],
    plan: &MixPlan,
    spec: &PipelineSpec,
    weights_on: WeightsOn,
    plan_roi: impl Fn(&DeferredDecode) -> Roi,
) -> HostPlan {
    let layout = layout_sources(images, plan_roi);
    let (w, h) = (spec.size.width, spec.size.height);
    let resize = plan_resize_sources(images, &layout.sources, layout.src_bytes, w, h, weights_on);
    let norm = NormalizeCoeffs::new(&spec.normalize);
    HostPlan {
        layout,
        resize,
        mix: mix_descs(plan),
        norm: norm.scale.iter().chain(norm.bias.iter()).copied().collect(),
    }
}

pub(crate) fn stats_from_sums(s: &[f64; 12], n: f64) -> BatchStats {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpeg::planes::roi_for_header;
    use crate::staging::{copy_bytes, pack_regions};
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
            weights: None,
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
            weights: None,
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

    /// Weights the per-image stage computed give the plan computing them here gives; weights
    /// computed for another crop or size are not used.
    #[test]
    fn per_image_weights_give_the_same_plan() {
        use jpeg_encoder::SamplingFactor::F_2_2;
        let plain = vec![
            host_image(0, 40, 30),
            deferred_image(1, jpeg(200, 150, F_2_2), (37, 21, 101, 77)),
            host_image(2, 170, 90),
        ];
        let want = plan_resize(&plain, 64, 48, WeightsOn::Host);
        let mut with = plain.clone();
        for im in &mut with {
            let (w, h) = match im.deferred.as_deref() {
                Some(d) => (d.region.2, d.region.3),
                None => (im.region.width, im.region.height),
            };
            im.weights = Some(Box::new(ResizeWeights::new(w, h, im.crop, 64, 48)));
        }
        // Stale: another output size.
        with[2].weights = Some(Box::new(ResizeWeights::new(170, 90, with[2].crop, 32, 48)));
        let got = plan_resize(&with, 64, 48, WeightsOn::Host);
        assert_eq!(got.descs, want.descs);
        assert_eq!(got.tables, want.tables);
        assert_eq!(
            (got.tmp_bytes, got.max_tmp_rows),
            (want.tmp_bytes, want.max_tmp_rows)
        );
        // Weights left to the device: the same descriptors and table size, no table.
        let device = plan_resize(&plain, 64, 48, WeightsOn::Device);
        assert_eq!(device.descs, want.descs);
        assert_eq!(device.table_len, want.tables.len());
        assert!(device.tables.is_empty());
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

//! The start-up check of the device's resize weights: the `resize_weights` kernel must give
//! the CPU reference's weights bit for bit (the same double arithmetic, no FMA contraction),
//! or batches use host weights. CI checks the kernel's arithmetic on the host
//! (tests/host_arithmetic); this checks the device's compiler and hardware on it.

use std::sync::Arc;

use augserve_core::image::RgbImage;
use augserve_core::ops::crop::CropBox;
use augserve_core::pipeline::PreparedImage;
use cudarc::driver::CudaStream;

use crate::device::GpuDevice;
use crate::plan::{plan_resize_sources, ResizePlan, ResizeSource, WeightsOn};
use crate::stages::resize_weights;
use crate::GpuError;

/// Output sizes probed: a square crop, and an odd, non-square one that upscales some axes.
const PROBE_OUTPUTS: [(u32, u32); 2] = [(224, 224), (61, 97)];
/// Images per probe batch.
const PROBE_IMAGES: u32 = 48;

/// Where the device's weights differ from the host's, or None when they agree everywhere.
pub(crate) fn device_weights_differ(
    device: &GpuDevice,
    stream: &Arc<CudaStream>,
) -> Result<Option<String>, GpuError> {
    weights_differ(|plan, out| run_weights_kernel(device, stream, plan, out))
}

/// Where the tables `compute` gives for the probe batches' device plans differ from the
/// host's weights, or None (public so the host build of the kernel is checked with it).
pub fn weights_differ<E>(
    mut compute: impl FnMut(&ResizePlan, (u32, u32)) -> Result<Vec<i32>, E>,
) -> Result<Option<String>, E> {
    for (out_w, out_h) in PROBE_OUTPUTS {
        let (images, sources) = probe_batch(out_w, out_h);
        let host = plan_resize_sources(&images, &sources, 0, out_w, out_h, WeightsOn::Host);
        let on_device = plan_resize_sources(&images, &sources, 0, out_w, out_h, WeightsOn::Device);
        let got = compute(&on_device, (out_w, out_h))?;
        if got.len() != host.tables.len() {
            return Ok(Some(format!(
                "{out_w}x{out_h} output: {} table entries, {} on the host",
                got.len(),
                host.tables.len()
            )));
        }
        if let Some(at) = got.iter().zip(&host.tables).position(|(g, w)| g != w) {
            return Ok(Some(format!(
                "{out_w}x{out_h} output, table entry {at}: {} on the device, {} on the host",
                got[at], host.tables[at]
            )));
        }
    }
    Ok(None)
}

/// Probe crops of sources from 1 to ~6,000 pixels a side, fractional boxes, some past the
/// edges; a fixed sequence, so every start checks the same cases.
fn probe_batch(out_w: u32, out_h: u32) -> (Vec<PreparedImage>, Vec<ResizeSource>) {
    let mut x = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(out_w * 7919 + out_h);
    let mut next = |m: u32| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % u64::from(m.max(1))) as u32
    };
    (0..PROBE_IMAGES)
        .map(|i| {
            let (w, h) = (1 + next(if i % 4 == 0 { 64 } else { 6000 }), 1 + next(6000));
            let x0 = next(w * 4) as f32 / 4.0 - if i % 7 == 0 { 1.5 } else { 0.0 };
            let y0 = next(h * 4) as f32 / 4.0;
            let crop = CropBox {
                x0,
                y0,
                x1: x0 + 0.25 + next(w * 4) as f32 / 4.0,
                y1: y0 + 0.25 + next(h * 4) as f32 / 4.0,
            };
            let image = PreparedImage {
                sample_id: u64::from(i),
                label: 0,
                region: RgbImage::new(0, 0),
                crop,
                flip: false,
                deferred: None,
                warning: None,
                weights: None,
            };
            let source = ResizeSource {
                offset: 0,
                width: w,
                height: h,
                pitch: w,
            };
            (image, source)
        })
        .unzip()
}

/// The weights table `resize_weights` computes for `plan`'s descriptors.
fn run_weights_kernel(
    device: &GpuDevice,
    stream: &Arc<CudaStream>,
    plan: &ResizePlan,
    out: (u32, u32),
) -> Result<Vec<i32>, GpuError> {
    let descs = stream.clone_htod(&plan.descs)?;
    let mut table = stream.alloc_zeros::<i32>(plan.table_len)?;
    resize_weights(device, stream, &descs, &mut table, plan, out)?;
    let table = stream.clone_dtoh(&table)?;
    stream.synchronize()?;
    Ok(table)
}

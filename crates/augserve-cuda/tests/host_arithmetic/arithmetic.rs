//! Resize, mix + normalise, colour jitter and half conversion: the host build equals Rust.

use super::*;

#[test]
fn half_conversions_match_the_half_crate() {
    let lib = host_library();
    let to16: extern "C" fn(f32) -> u16 = sym(&lib, b"host_f32_to_f16");
    let to32: extern "C" fn(u16) -> f32 = sym(&lib, b"host_f16_to_f32");
    for bits in 0..=u16::MAX {
        let ours = to32(bits);
        let theirs = half::f16::from_bits(bits).to_f32();
        assert!(
            ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
            "{bits:#x}"
        );
    }
    let mut rng = keyed_rng(0, 0, Purpose::Sample, 0);
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        65504.0,
        65520.0,
        1e-8,
        5.96e-8,
        2.98e-8,
        6.1e-5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
    ];
    let randoms = (0..200_000).map(|i| {
        if i % 2 == 0 {
            f32::from_bits(rng.next_u32())
        } else {
            rng.random_range(-3.0f32..3.0)
        }
    });
    for f in specials.into_iter().chain(randoms) {
        let ours = to16(f);
        let theirs = half::f16::from_f32(f).to_bits();
        if f.is_nan() {
            assert!(half::f16::from_bits(ours).is_nan());
        } else {
            assert_eq!(ours, theirs, "{f:e}");
        }
    }
}

type WeightsFn = unsafe extern "C" fn(
    *const ResizeDesc,
    i32,
    *mut i32,
    *mut i32,
    *mut i32,
    *mut i32,
    *mut i32,
    i32,
    i32,
);

/// The table `resize_weights` fills from `plan`'s descriptors (its host build).
fn device_weights(
    lib: &libloading::Library,
    plan: &ResizePlan,
    out_w: u32,
    out_h: u32,
) -> Vec<i32> {
    let weights: WeightsFn = sym(lib, b"host_resize_weights");
    // Not zero: every entry must be written.
    let mut t = vec![i32::MIN; plan.table_len];
    let base = t.as_mut_ptr();
    // SAFETY: the table has the plan's length; the kernel writes inside the offsets given.
    unsafe {
        weights(
            plan.descs.as_ptr(),
            plan.descs.len() as i32,
            base.add(plan.hfirst),
            base.add(plan.hcount),
            base.add(plan.vfirst),
            base.add(plan.vcount),
            base.add(plan.weights),
            out_w as i32,
            out_h as i32,
        )
    };
    t
}

/// The device's weights equal `Coeffs::new`'s on crops of sources up to 6,000 pixels a side
/// (downscales to 1/27), upscales, boxes past the edges, one-pixel sources.
#[test]
fn resize_weights_kernel_on_the_host_equals_the_rust_weights() {
    let lib = host_library();
    let mut rng = keyed_rng(11, 0, Purpose::Sample, 2);
    for (out_w, out_h) in [(224u32, 224u32), (61, 97), (512, 3), (1, 1)] {
        let mut images = Vec::new();
        let mut sources = Vec::new();
        for i in 0..200u64 {
            let big = if i % 5 == 0 { 8 } else { 6000 };
            let (w, h) = (rng.random_range(1..=big), rng.random_range(1..=6000u32));
            let x0 = rng.random_range(0..w * 4) as f32 / 4.0 - if i % 9 == 0 { 2.5 } else { 0.0 };
            let y0 = rng.random_range(0..h * 4) as f32 / 4.0;
            let crop = CropBox {
                x0,
                y0,
                x1: x0 + rng.random_range(0.25..=w as f32 + 1.0),
                y1: y0 + rng.random_range(0.25..=h as f32),
            };
            images.push(PreparedImage {
                sample_id: i,
                label: 0,
                region: RgbImage::new(0, 0),
                crop,
                flip: false,
                deferred: None,
                warning: None,
                weights: None,
            });
            sources.push(ResizeSource {
                offset: 0,
                width: w,
                height: h,
                pitch: w,
            });
        }
        let host = plan_resize_sources(&images, &sources, 0, out_w, out_h, WeightsOn::Host);
        let device = plan_resize_sources(&images, &sources, 0, out_w, out_h, WeightsOn::Device);
        assert_eq!(device.descs, host.descs);
        let got = device_weights(&lib, &device, out_w, out_h);
        assert_eq!(got.len(), host.tables.len());
        if let Some(at) = got.iter().zip(&host.tables).position(|(g, w)| g != w) {
            panic!(
                "{out_w}x{out_h}: entry {at}: {} vs {}",
                got[at], host.tables[at]
            );
        }
    }
}

/// The start-up check passes the kernel's host build and catches one wrong weight.
#[test]
fn start_up_check_passes_the_weights_kernel_and_catches_a_wrong_weight() {
    use augserve_cuda::weights_check::weights_differ;
    let lib = host_library();
    let ok = weights_differ(|plan, (w, h)| Ok::<_, ()>(device_weights(&lib, plan, w, h)));
    assert_eq!(ok, Ok(None));
    let off_by_one = weights_differ(|plan, (w, h)| {
        let mut t = device_weights(&lib, plan, w, h);
        t[plan.weights + 7] += 1;
        Ok::<_, ()>(t)
    });
    assert!(matches!(off_by_one, Ok(Some(_))), "{off_by_one:?}");
}

#[test]
fn resize_kernels_on_the_host_equal_the_rust_reference() {
    let lib = host_library();
    let resize: ResizeBatchFn = sym(&lib, b"host_resize_batch");
    let mut rng = keyed_rng(9, 0, Purpose::Sample, 1);
    for (out_w, out_h) in [(224u32, 224u32), (37, 91), (300, 17), (5, 5)] {
        let mut images = Vec::new();
        for i in 0..12 {
            let (w, h) = (rng.random_range(1..400u32), rng.random_range(1..300u32));
            let region = random_image(&mut rng, w, h);
            let crop = match i % 4 {
                0 => CropBox::full(w, h),
                1 => {
                    let x0 = rng.random_range(0.0..w as f32 * 0.5);
                    let y0 = rng.random_range(0.0..h as f32 * 0.5);
                    CropBox {
                        x0,
                        y0,
                        x1: rng.random_range(x0 + 0.5..=w as f32),
                        y1: rng.random_range(y0 + 0.5..=h as f32),
                    }
                }
                2 => CropBox {
                    x0: 0.0,
                    y0: 0.0,
                    x1: out_w.min(w) as f32,
                    y1: out_h.min(h) as f32,
                },
                _ => {
                    let x0 = rng.random_range(0..w) as f32;
                    let y0 = rng.random_range(0..h) as f32;
                    CropBox {
                        x0,
                        y0,
                        x1: w as f32,
                        y1: h as f32,
                    }
                }
            };
            images.push(PreparedImage {
                sample_id: i,
                label: 0,
                region,
                crop,
                flip: rng.random(),
                deferred: None,
                warning: None,
                weights: None,
            });
        }
        let rp = plan_resize(&images, out_w, out_h, WeightsOn::Host);
        // The weights the device computes from the descriptors alone are these, bit for bit.
        let on_device = plan_resize(&images, out_w, out_h, WeightsOn::Device);
        assert_eq!(on_device.descs, rp.descs);
        assert_eq!(device_weights(&lib, &on_device, out_w, out_h), rp.tables);
        let src: Vec<u8> = images
            .iter()
            .flat_map(|im| im.region.data.iter().copied())
            .collect();
        let mut tmp = vec![0u8; rp.tmp_bytes.max(1)];
        let mut out = vec![0u8; images.len() * (out_w * out_h * 3) as usize];
        let t = &rp.tables;
        // SAFETY: buffers sized from the plan the kernels index by.
        unsafe {
            resize(
                src.as_ptr(),
                tmp.as_mut_ptr(),
                out.as_mut_ptr(),
                rp.descs.as_ptr(),
                images.len() as i32,
                t[rp.hfirst..].as_ptr(),
                t[rp.hcount..].as_ptr(),
                t[rp.weights..].as_ptr(),
                t[rp.vfirst..].as_ptr(),
                t[rp.vcount..].as_ptr(),
                t[rp.weights..].as_ptr(),
                out_w as i32,
                out_h as i32,
            )
        };
        for (i, im) in images.iter().enumerate() {
            let mut want = resize_u8_reference(&im.region, im.crop, out_w, out_h);
            if im.flip {
                want.flip_horizontal();
            }
            let len = want.data.len();
            assert!(
                out[i * len..(i + 1) * len] == want.data[..],
                "image {i}: {}x{} {:?} -> {out_w}x{out_h}",
                im.region.width,
                im.region.height,
                im.crop
            );
        }
    }
}

#[test]
fn mix_normalize_kernel_on_the_host_equals_the_rust_path() {
    let lib = host_library();
    let mix_fn: MixFn = sym(&lib, b"host_mix_normalize");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (h, w, n) = (23u32, 31u32, 9usize);
    let mut rng = keyed_rng(4, 0, Purpose::Batch, 0);
    let mut images = vec![0u8; n * (h * w * 3) as usize];
    rng.fill_bytes(&mut images);
    images[..40].fill(0);
    images[40..80].fill(255);
    for mode in [MixMode::Batch, MixMode::Pair, MixMode::Elem] {
        for key in 0..6u64 {
            let m = EpochMix {
                mixup_alpha: 0.4,
                cutmix_alpha: 1.0,
                prob: 0.9,
                switch_prob: 0.5,
                mode,
            };
            let plan: MixPlan = plan_mix(&mut keyed_rng(4, 1, Purpose::Batch, key), &m, n, h, w);
            for dtype in [DType::Uint8, DType::Float16, DType::Float32] {
                for layout in [Layout::Nchw, Layout::Nhwc] {
                    let spec = PipelineSpec {
                        size: Size {
                            width: w,
                            height: h,
                        },
                        output: OutputSpec { dtype, layout },
                        ..PipelineSpec::default()
                    };
                    let (want, stats) = mix_normalize_batch(&images, &plan, &spec, &pool);
                    let norm = augserve_core::ops::mix::NormalizeCoeffs::new(&spec.normalize);
                    let mut out = vec![0u8; want.data.len()];
                    let mut sums = [0f64; 9];
                    let descs = mix_descs(&plan);
                    // SAFETY: buffers sized for n images of h x w.
                    unsafe {
                        mix_fn(
                            images.as_ptr(),
                            descs.as_ptr(),
                            norm.scale.as_ptr(),
                            norm.bias.as_ptr(),
                            dtype_code(dtype),
                            layout_code(layout),
                            out.as_mut_ptr(),
                            n as i32,
                            h as i32,
                            w as i32,
                            sums.as_mut_ptr(),
                        )
                    };
                    assert!(out == want.data, "{mode:?} {dtype:?} {layout:?} key {key}");
                    let count = (n as u32 * h * w) as f64;
                    for c in 0..3 {
                        let mean = sums[c] / count;
                        assert!(
                            (mean - f64::from(stats.mean[c])).abs() < 1e-4,
                            "mean {mean} vs {}",
                            stats.mean[c]
                        );
                        assert!((sums[6 + c] / count - f64::from(stats.clipped[c])).abs() < 1e-6);
                    }
                }
            }
        }
    }
}

#[test]
fn colour_jitter_matches_the_rust_path_byte_for_byte() {
    use augserve_core::ops::color::{apply_color_jitter, ColorFactors};
    let lib = host_library();
    type ColorFn = unsafe extern "C" fn(*mut u8, i32, i32, f32, f32, f32);
    let color: ColorFn = sym(&lib, b"host_color_jitter");
    let size: extern "C" fn() -> u64 = sym(&lib, b"host_sizeof_color_desc");
    assert_eq!(
        size() as usize,
        std::mem::size_of::<augserve_cuda::kernels::ColorDesc>()
    );
    let mut rng = keyed_rng(77, 0, Purpose::Sample, 0);
    let mut checked = 0;
    for k in 0..60 {
        let (w, h) = (rng.random_range(1..=97u32), rng.random_range(1..=61u32));
        let mut data = vec![0u8; (w * h * 3) as usize];
        rng.fill_bytes(&mut data);
        if k % 3 == 0 {
            // Smooth, low-contrast content too, where rounding ties are common.
            for (i, v) in data.iter_mut().enumerate() {
                *v = (100 + (i / 3) % 40) as u8;
            }
        }
        let f = match k % 4 {
            0 => ColorFactors {
                brightness: 1.0,
                contrast: 1.0,
                saturation: 1.0,
            },
            _ => ColorFactors {
                brightness: rng.random_range(0.5..1.5),
                contrast: if k % 5 == 0 {
                    1.0
                } else {
                    rng.random_range(0.5..1.5)
                },
                saturation: if k % 7 == 0 {
                    1.0
                } else {
                    rng.random_range(0.0..2.0)
                },
            },
        };
        let mut want = RgbImage::from_vec(w, h, data.clone()).unwrap();
        apply_color_jitter(&mut want, &f);
        let mut got = data;
        // SAFETY: `got` holds w * h * 3 bytes, as host_color_jitter reads and writes.
        unsafe {
            color(
                got.as_mut_ptr(),
                w as i32,
                h as i32,
                f.brightness,
                f.contrast,
                f.saturation,
            )
        };
        assert_eq!(got, want.data, "image {k}: {w}x{h} {f:?}");
        checked += 1;
    }
    println!(
        "colour jitter: {checked} random images, kernel arithmetic == Rust path byte for byte"
    );
}

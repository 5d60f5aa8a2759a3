//! Proto <-> core conversions. A request's spec becomes a validated core `PipelineSpec` (or an
//! error naming the field); a core `Batch` becomes the wire `Batch` without copying its tensor.

use augserve_core::batch::{Batch, StageTimings};
use augserve_core::ops::stats::PERCENTILES;
use augserve_core::spec::{
    ColorJitter, CropSpec, DType, DamagedPolicy, Device, ErrorPolicy, Layout, MixMode, MixSchedule,
    MixSpec, Normalize, OutputSpec, PipelineSpec, Placement, Size,
};
use augserve_core::{Error, SampleError, TailPolicy};

use crate::v1;

fn bad(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

fn enum_value<T: TryFrom<i32>>(field: &str, v: i32) -> Result<T, Error> {
    T::try_from(v).map_err(|_| bad(field, format!("unknown enum value {v}")))
}

fn pair(field: &str, v: &[f32], default: [f32; 2]) -> Result<[f32; 2], Error> {
    match v {
        [] => Ok(default),
        [a, b] => Ok([*a, *b]),
        _ => Err(bad(
            field,
            format!("needs 2 values [min, max], got {}", v.len()),
        )),
    }
}

fn triple(field: &str, v: &[f32], default: [f32; 3]) -> Result<[f32; 3], Error> {
    match v {
        [] => Ok(default),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(bad(field, format!("needs 3 values, got {}", v.len()))),
    }
}

fn device(field: &str, v: i32, default: Device) -> Result<Device, Error> {
    Ok(match enum_value::<v1::Device>(field, v)? {
        v1::Device::Unspecified => default,
        v1::Device::Auto => Device::Auto,
        v1::Device::Cpu => Device::Cpu,
        v1::Device::Gpu => Device::Gpu,
    })
}

/// The core spec for a request's spec (`None` = all defaults), validated.
pub fn spec_from_proto(p: Option<&v1::PipelineSpec>) -> Result<PipelineSpec, Error> {
    let d = PipelineSpec::default();
    let Some(p) = p else { return Ok(d) };
    let crop = match &p.crop {
        None => d.crop.clone(),
        Some(c) => match enum_value::<v1::CropMode>("crop.mode", c.mode)? {
            v1::CropMode::Unspecified | v1::CropMode::RandomResized => CropSpec::RandomResized {
                scale: pair("crop.scale", &c.scale, [0.08, 1.0])?,
                ratio: pair("crop.ratio", &c.ratio, [3.0 / 4.0, 4.0 / 3.0])?,
            },
            v1::CropMode::Center => CropSpec::Center {
                crop_pct: c.crop_pct.unwrap_or(0.875),
            },
            v1::CropMode::Resize => CropSpec::Resize,
        },
    };
    let mix = match &p.mix {
        None => d.mix.clone(),
        Some(m) => MixSpec {
            mixup_alpha: m.mixup_alpha,
            cutmix_alpha: m.cutmix_alpha,
            prob: m.prob.unwrap_or(d.mix.prob),
            switch_prob: m.switch_prob.unwrap_or(d.mix.switch_prob),
            mode: match enum_value::<v1::MixMode>("mix.mode", m.mode)? {
                v1::MixMode::Unspecified | v1::MixMode::Batch => MixMode::Batch,
                v1::MixMode::Pair => MixMode::Pair,
                v1::MixMode::Elem => MixMode::Elem,
            },
            label_smoothing: m.label_smoothing,
            num_classes: m.num_classes,
            schedule: MixSchedule {
                start_epoch: m.start_epoch,
                full_epoch: m.full_epoch,
            },
        },
    };
    let normalize = match &p.normalize {
        None => d.normalize,
        Some(n) => Normalize {
            mean: triple("normalize.mean", &n.mean, d.normalize.mean)?,
            std: triple("normalize.std", &n.std, d.normalize.std)?,
        },
    };
    let placement = match &p.placement {
        None => d.placement,
        Some(pl) => Placement {
            color: device("placement.color", pl.color, d.placement.color)?,
            resize: device("placement.resize", pl.resize, d.placement.resize)?,
            mix: device("placement.mix", pl.mix, d.placement.mix)?,
        },
    };
    let spec = PipelineSpec {
        size: Size {
            width: p.width.unwrap_or(d.size.width),
            height: p.height.unwrap_or(d.size.height),
        },
        crop,
        flip_prob: p.flip_prob.unwrap_or(d.flip_prob),
        color: p.color.as_ref().map_or(d.color, |c| ColorJitter {
            brightness: c.brightness,
            contrast: c.contrast,
            saturation: c.saturation,
        }),
        mix,
        normalize,
        output: OutputSpec {
            dtype: dtype_from_proto(p.dtype)?,
            layout: layout_from_proto(p.layout)?,
        },
        placement,
        on_error: match enum_value::<v1::ErrorPolicy>("on_error", p.on_error)? {
            v1::ErrorPolicy::Unspecified | v1::ErrorPolicy::Skip => ErrorPolicy::Skip,
            v1::ErrorPolicy::Fail => ErrorPolicy::Fail,
        },
        on_damaged: match enum_value::<v1::DamagedPolicy>("on_damaged", p.on_damaged)? {
            v1::DamagedPolicy::Unspecified | v1::DamagedPolicy::Reject => DamagedPolicy::Reject,
            v1::DamagedPolicy::Accept => DamagedPolicy::Accept,
        },
        dct_scaling: p.dct_scaling,
    };
    spec.validate()?;
    Ok(spec)
}

fn device_to_proto(d: Device) -> i32 {
    (match d {
        Device::Auto => v1::Device::Auto,
        Device::Cpu => v1::Device::Cpu,
        Device::Gpu => v1::Device::Gpu,
    }) as i32
}

/// The wire form of a core spec (every field set explicitly).
pub fn spec_to_proto(s: &PipelineSpec) -> v1::PipelineSpec {
    let crop = match &s.crop {
        CropSpec::RandomResized { scale, ratio } => v1::Crop {
            mode: v1::CropMode::RandomResized as i32,
            scale: scale.to_vec(),
            ratio: ratio.to_vec(),
            crop_pct: None,
        },
        CropSpec::Center { crop_pct } => v1::Crop {
            mode: v1::CropMode::Center as i32,
            crop_pct: Some(*crop_pct),
            ..Default::default()
        },
        CropSpec::Resize => v1::Crop {
            mode: v1::CropMode::Resize as i32,
            ..Default::default()
        },
    };
    let m = &s.mix;
    v1::PipelineSpec {
        width: Some(s.size.width),
        height: Some(s.size.height),
        crop: Some(crop),
        flip_prob: Some(s.flip_prob),
        color: Some(v1::ColorJitter {
            brightness: s.color.brightness,
            contrast: s.color.contrast,
            saturation: s.color.saturation,
        }),
        mix: Some(v1::Mix {
            mixup_alpha: m.mixup_alpha,
            cutmix_alpha: m.cutmix_alpha,
            prob: Some(m.prob),
            switch_prob: Some(m.switch_prob),
            mode: (match m.mode {
                MixMode::Batch => v1::MixMode::Batch,
                MixMode::Pair => v1::MixMode::Pair,
                MixMode::Elem => v1::MixMode::Elem,
            }) as i32,
            label_smoothing: m.label_smoothing,
            num_classes: m.num_classes,
            start_epoch: m.schedule.start_epoch,
            full_epoch: m.schedule.full_epoch,
        }),
        normalize: Some(v1::Normalize {
            mean: s.normalize.mean.to_vec(),
            std: s.normalize.std.to_vec(),
        }),
        dtype: dtype_to_proto(s.output.dtype) as i32,
        layout: layout_to_proto(s.output.layout) as i32,
        placement: Some(v1::Placement {
            color: device_to_proto(s.placement.color),
            resize: device_to_proto(s.placement.resize),
            mix: device_to_proto(s.placement.mix),
        }),
        on_error: (match s.on_error {
            ErrorPolicy::Skip => v1::ErrorPolicy::Skip,
            ErrorPolicy::Fail => v1::ErrorPolicy::Fail,
        }) as i32,
        on_damaged: (match s.on_damaged {
            DamagedPolicy::Reject => v1::DamagedPolicy::Reject,
            DamagedPolicy::Accept => v1::DamagedPolicy::Accept,
        }) as i32,
        dct_scaling: s.dct_scaling,
    }
}

pub fn dtype_from_proto(v: i32) -> Result<DType, Error> {
    Ok(match enum_value::<v1::DType>("dtype", v)? {
        v1::DType::DtypeUnspecified | v1::DType::DtypeFloat32 => DType::Float32,
        v1::DType::DtypeUint8 => DType::Uint8,
        v1::DType::DtypeFloat16 => DType::Float16,
    })
}

pub fn layout_from_proto(v: i32) -> Result<Layout, Error> {
    Ok(match enum_value::<v1::Layout>("layout", v)? {
        v1::Layout::Unspecified | v1::Layout::Nchw => Layout::Nchw,
        v1::Layout::Nhwc => Layout::Nhwc,
    })
}

pub fn dtype_to_proto(d: DType) -> v1::DType {
    match d {
        DType::Uint8 => v1::DType::DtypeUint8,
        DType::Float16 => v1::DType::DtypeFloat16,
        DType::Float32 => v1::DType::DtypeFloat32,
    }
}

pub fn layout_to_proto(l: Layout) -> v1::Layout {
    match l {
        Layout::Nchw => v1::Layout::Nchw,
        Layout::Nhwc => v1::Layout::Nhwc,
    }
}

pub fn tail_from_proto(v: i32) -> Result<TailPolicy, Error> {
    Ok(
        match v1::Tail::try_from(v).map_err(|_| Error::InvalidArgument {
            field: "tail".into(),
            message: format!("unknown enum value {v}"),
        })? {
            v1::Tail::Unspecified | v1::Tail::Pad => TailPolicy::Pad,
            v1::Tail::Drop => TailPolicy::Drop,
            v1::Tail::Uneven => TailPolicy::Uneven,
        },
    )
}

pub fn sample_error_to_proto(e: &SampleError) -> v1::SampleError {
    v1::SampleError {
        sample_id: e.sample_id,
        source: e.source_name.clone(),
        code: e.kind.reason_code().into(),
        reason: e.kind.to_string(),
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn timings_to_proto(t: &StageTimings) -> v1::StageTimings {
    v1::StageTimings {
        read_ms: ms(t.read),
        decode_ms: ms(t.decode),
        color_ms: ms(t.color),
        per_image_wall_ms: ms(t.per_image_wall),
        resize_ms: ms(t.resize),
        mix_normalize_ms: ms(t.mix_normalize),
        stats_ms: ms(t.stats),
        total_ms: ms(t.total),
        decoded_by_region: t.decoded.region,
        decoded_scaled: t.decoded.scaled,
        decoded_progressive: t.decoded.progressive,
        decoded_whole: t.decoded.whole,
        decoded_on_device: t.decoded.device,
        gpu_busy_ms: ms(t.device_busy),
    }
}

/// The wire batch. The tensor's bytes move into `bytes::Bytes` without a copy.
pub fn batch_to_proto(b: Batch, num_classes: u32) -> v1::Batch {
    let s = b.stats;
    let mut out = v1::Batch {
        epoch: b.epoch,
        index: b.index,
        images: Some(v1::Tensor {
            shape: b.tensor.shape.iter().map(|&d| d as u64).collect(),
            dtype: dtype_to_proto(b.tensor.dtype) as i32,
            layout: layout_to_proto(b.tensor.layout) as i32,
            data: bytes::Bytes::from(b.tensor.data),
            align: Vec::new(),
        }),
        labels_a: b.labels_a,
        labels_b: b.labels_b,
        lam: b.lam,
        num_classes: if b.soft_targets.is_some() {
            num_classes
        } else {
            0
        },
        soft_targets: b.soft_targets.unwrap_or_default(),
        sample_ids: b.sample_ids,
        errors: b.errors.iter().map(sample_error_to_proto).collect(),
        warnings: b.warnings.iter().map(sample_error_to_proto).collect(),
        stats: Some(v1::BatchStats {
            mean: s.mean.to_vec(),
            std: s.std.to_vec(),
            mad: s.mad.to_vec(),
            clipped: s.clipped.to_vec(),
            percentile_levels: s
                .percentiles
                .map(|_| PERCENTILES.to_vec())
                .unwrap_or_default(),
            percentiles: s
                .percentiles
                .map(|p| p.iter().flatten().copied().collect())
                .unwrap_or_default(),
        }),
        timings: Some(timings_to_proto(&b.timings)),
        device: b.device,
        transport: None,
        slot: None,
    };
    align_tensor_data(&mut out);
    out
}

/// Where `Tensor.data` starts in an encoded `Batch` is a multiple of this (see `Tensor.align`).
pub const TENSOR_DATA_ALIGN: usize = 64;

/// Sizes `images.align` so that the tensor bytes start at a multiple of `TENSOR_DATA_ALIGN`
/// in the encoded batch. prost writes fields in tag order, so the bytes before `data` are:
/// Batch.epoch, Batch.index, the images field header, then shape, dtype, layout, align and the
/// data field header. Receivers can then view the tensor in place (numpy, torch) without copying
/// it to fix its alignment.
pub fn align_tensor_data(b: &mut v1::Batch) {
    use prost::encoding::encoded_len_varint;
    use prost::Message;
    let head = v1::Batch {
        epoch: b.epoch,
        index: b.index,
        ..Default::default()
    }
    .encoded_len();
    let Some(t) = b.images.as_mut() else { return };
    if t.data.is_empty() {
        return;
    }
    let meta = v1::Tensor {
        shape: t.shape.clone(),
        dtype: t.dtype,
        layout: t.layout,
        ..Default::default()
    }
    .encoded_len();
    let data_head = 1 + encoded_len_varint(t.data.len() as u64);
    let data_offset = |fill: usize| {
        // An empty bytes field is not encoded at all (proto3).
        let align_field = if fill == 0 {
            0
        } else {
            1 + encoded_len_varint(fill as u64) + fill
        };
        let tensor_len = meta + align_field + data_head + t.data.len();
        head + 1 + encoded_len_varint(tensor_len as u64) + meta + align_field + data_head
    };
    // Field sizes 2 + fill cover every residue within 2 * TENSOR_DATA_ALIGN candidates.
    let fill = (0..=2 * TENSOR_DATA_ALIGN + 2)
        .find(|&f| data_offset(f) % TENSOR_DATA_ALIGN == 0)
        .unwrap_or(0);
    t.align = vec![0u8; fill];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a varint at `*pos` (test-only wire walker).
    fn varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }

    /// The (offset, length) of length-delimited field `tag` among the fields in `buf[start..end]`.
    fn find_field(buf: &[u8], start: usize, end: usize, tag: u64) -> Option<(usize, usize)> {
        let mut pos = start;
        while pos < end {
            let key = varint(buf, &mut pos);
            match key & 7 {
                0 => {
                    varint(buf, &mut pos);
                }
                2 => {
                    let len = varint(buf, &mut pos) as usize;
                    if key >> 3 == tag {
                        return Some((pos, len));
                    }
                    pos += len;
                }
                5 => pos += 4,
                1 => pos += 8,
                w => panic!("wire type {w}"),
            }
        }
        None
    }

    #[test]
    fn tensor_data_is_aligned_in_the_encoded_batch() {
        use prost::Message;
        let mut checked = 0;
        for epoch in [0u64, 1, 127, 128, 1 << 20, u64::MAX] {
            for index in [0u64, 5, 300, 70_000] {
                for data_len in [1usize, 100, 127, 128, 16_383, 16_384, 150_528, 2_097_152] {
                    for shape in [vec![1u64], vec![256, 3, 224, 224], vec![u64::MAX]] {
                        let mut b = v1::Batch {
                            epoch,
                            index,
                            images: Some(v1::Tensor {
                                shape,
                                dtype: v1::DType::DtypeFloat16 as i32,
                                layout: v1::Layout::Nhwc as i32,
                                data: bytes::Bytes::from(vec![7u8; data_len]),
                                align: Vec::new(),
                            }),
                            labels_a: vec![1, 2, 3],
                            ..Default::default()
                        };
                        align_tensor_data(&mut b);
                        let buf = b.encode_to_vec();
                        let (t, tlen) = find_field(&buf, 0, buf.len(), 3).unwrap();
                        let (d, dlen) = find_field(&buf, t, t + tlen, 5).unwrap();
                        assert_eq!(dlen, data_len);
                        assert_eq!(d % TENSOR_DATA_ALIGN, 0, "epoch {epoch} index {index}");
                        assert!(buf[d..d + dlen].iter().all(|&x| x == 7));
                        let back = v1::Batch::decode(buf.as_slice()).unwrap();
                        assert_eq!(back.images.unwrap().data.len(), data_len);
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 6 * 4 * 8 * 3);
    }

    /// Every stage time and count reaches the wire, GPU busy time included.
    #[test]
    fn stage_timings_reach_the_wire() {
        use std::time::Duration;
        let t = StageTimings {
            read: Duration::from_millis(1),
            total: Duration::from_millis(9),
            device_busy: Duration::from_micros(2500),
            decoded: augserve_core::batch::DecodeTally {
                device: 7,
                ..Default::default()
            },
            ..StageTimings::default()
        };
        let p = timings_to_proto(&t);
        assert_eq!((p.read_ms, p.total_ms, p.gpu_busy_ms), (1.0, 9.0, 2.5));
        assert_eq!(p.decoded_on_device, 7);
    }

    #[test]
    fn empty_spec_is_the_default() {
        assert_eq!(spec_from_proto(None).unwrap(), PipelineSpec::default());
        assert_eq!(
            spec_from_proto(Some(&v1::PipelineSpec::default())).unwrap(),
            PipelineSpec::default()
        );
    }

    #[test]
    fn specs_roundtrip_through_the_wire_form() {
        let mut s = PipelineSpec {
            crop: CropSpec::Center { crop_pct: 0.9 },
            ..PipelineSpec::default()
        };
        s.mix.mixup_alpha = 0.3;
        s.mix.mode = MixMode::Pair;
        s.output.dtype = DType::Float16;
        s.placement.resize = Device::Cpu;
        assert_eq!(spec_from_proto(Some(&spec_to_proto(&s))).unwrap(), s);
        let d = PipelineSpec::default();
        assert_eq!(spec_from_proto(Some(&spec_to_proto(&d))).unwrap(), d);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(v1::PipelineSpec, &str)> = vec![
            (
                v1::PipelineSpec {
                    width: Some(0),
                    ..Default::default()
                },
                "size.width",
            ),
            (
                v1::PipelineSpec {
                    height: Some(100_000),
                    ..Default::default()
                },
                "size.height",
            ),
            (
                v1::PipelineSpec {
                    flip_prob: Some(f32::NAN),
                    ..Default::default()
                },
                "flip_prob",
            ),
            (
                v1::PipelineSpec {
                    dtype: 42,
                    ..Default::default()
                },
                "dtype",
            ),
            (
                v1::PipelineSpec {
                    color: Some(v1::ColorJitter {
                        brightness: -1.0,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "color.brightness",
            ),
            (
                v1::PipelineSpec {
                    crop: Some(v1::Crop {
                        scale: vec![0.5],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "crop.scale",
            ),
            (
                v1::PipelineSpec {
                    mix: Some(v1::Mix {
                        mode: 9,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "mix.mode",
            ),
        ];
        for (p, field) in cases {
            match spec_from_proto(Some(&p)).unwrap_err() {
                Error::InvalidSpec { field: f, .. } => assert_eq!(f, field),
                other => panic!("{other}"),
            }
        }
    }
}

//! The pipeline spec: what a client asks the pipeline to do to each image and each batch.
//! The same fields travel in the gRPC request; here they are plain serde structs readable from
//! TOML or JSON. Unknown fields are rejected, and [`PipelineSpec::validate`] names the field
//! of any out-of-range value.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{Error, Result};

/// Largest output side accepted (pixels); larger outputs are almost surely a mistake.
pub const MAX_OUTPUT_SIDE: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSpec {
    /// Output image size in pixels.
    pub size: Size,
    /// How the source region is chosen before resizing.
    pub crop: CropSpec,
    /// Probability of a horizontal flip, per image.
    pub flip_prob: f32,
    /// Colour jitter factors, sampled per image (torchvision's ColorJitter semantics).
    pub color: ColorJitter,
    /// Batch-wise mixup / cutmix (timm's Mixup semantics), with a schedule over epochs.
    pub mix: MixSpec,
    /// Per-channel normalisation applied to float outputs: (x/255 - mean) / std.
    pub normalize: Normalize,
    /// Output tensor format.
    pub output: OutputSpec,
    /// Where each stage runs.
    pub placement: Placement,
    /// What a failing image does to its batch.
    pub on_error: ErrorPolicy,
    /// What a damaged image (truncated, or bad data after its headers) is: an error (reject,
    /// the default), or part of the batch with a warning (accept).
    pub on_damaged: DamagedPolicy,
    /// Decode a JPEG whose crop is at least twice the output size (each side) at 1/2, 1/4 or
    /// 1/8 of its size in libjpeg-turbo's IDCT, then resize from that (the resize's
    /// antialiasing covers the remaining scale). Faster on large photos; the pixels differ
    /// from decode-then-resize (ARCHITECTURE.md gives by how much). Off by default: the
    /// output then equals the reference pipeline's, and a GPU's decode (nvJPEG, which does
    /// not scale) matches the CPU's. Images a GPU decodes are never scaled.
    pub dct_scaling: bool,
}

impl Default for PipelineSpec {
    /// The usual ImageNet training recipe: RandomResizedCrop 224, flip 0.5, ImageNet mean/std,
    /// float32 NCHW; no colour jitter and no mixup unless asked for.
    fn default() -> Self {
        PipelineSpec {
            size: Size {
                width: 224,
                height: 224,
            },
            crop: CropSpec::default(),
            flip_prob: 0.5,
            color: ColorJitter::default(),
            mix: MixSpec::default(),
            normalize: Normalize::default(),
            output: OutputSpec::default(),
            placement: Placement::default(),
            on_error: ErrorPolicy::Skip,
            on_damaged: DamagedPolicy::Reject,
            dct_scaling: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", try_from = "CropFields")]
pub enum CropSpec {
    /// torchvision's RandomResizedCrop: area fraction in `scale`, aspect ratio (w/h) in `ratio`
    /// (sampled log-uniformly), 10 tries then a centre crop.
    RandomResized {
        #[serde(default = "default_scale")]
        scale: [f32; 2],
        #[serde(default = "default_ratio")]
        ratio: [f32; 2],
    },
    /// Evaluation crop: resize the shorter side to `size / crop_pct`, then take the centre.
    Center {
        #[serde(default = "default_crop_pct")]
        crop_pct: f32,
    },
    /// Resize the whole image to the output size (aspect ratio not kept).
    Resize,
}

/// `[crop]` as written: every field optional, `mode` included (default `random_resized`,
/// as the README promises of every spec field); a field of another mode is refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CropFields {
    mode: Option<CropMode>,
    scale: Option<[f32; 2]>,
    ratio: Option<[f32; 2]>,
    crop_pct: Option<f32>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum CropMode {
    RandomResized,
    Center,
    Resize,
}

impl TryFrom<CropFields> for CropSpec {
    type Error = String;

    fn try_from(f: CropFields) -> std::result::Result<Self, String> {
        let mode = f.mode.unwrap_or(CropMode::RandomResized);
        let misplaced =
            |field: &str, modes: &str| format!("crop.{field} applies to mode = {modes} only");
        if mode != CropMode::RandomResized {
            if f.scale.is_some() {
                return Err(misplaced("scale", "\"random_resized\""));
            }
            if f.ratio.is_some() {
                return Err(misplaced("ratio", "\"random_resized\""));
            }
        }
        if mode != CropMode::Center && f.crop_pct.is_some() {
            return Err(misplaced("crop_pct", "\"center\""));
        }
        Ok(match mode {
            CropMode::RandomResized => CropSpec::RandomResized {
                scale: f.scale.unwrap_or_else(default_scale),
                ratio: f.ratio.unwrap_or_else(default_ratio),
            },
            CropMode::Center => CropSpec::Center {
                crop_pct: f.crop_pct.unwrap_or_else(default_crop_pct),
            },
            CropMode::Resize => CropSpec::Resize,
        })
    }
}

fn default_scale() -> [f32; 2] {
    [0.08, 1.0]
}
fn default_ratio() -> [f32; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn default_crop_pct() -> f32 {
    0.875
}

impl Default for CropSpec {
    fn default() -> Self {
        CropSpec::RandomResized {
            scale: default_scale(),
            ratio: default_ratio(),
        }
    }
}

/// Each factor `f` samples a multiplier uniformly from `[max(0, 1-f), 1+f]`; 0 disables it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

impl ColorJitter {
    pub fn is_identity(&self) -> bool {
        self.brightness == 0.0 && self.contrast == 0.0 && self.saturation == 0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixMode {
    /// One lambda (and one mixup/cutmix choice) for the whole batch.
    #[default]
    Batch,
    /// One lambda per pair (i, B-1-i).
    Pair,
    /// One lambda per element.
    Elem,
}

/// Mixup / cutmix, as timm's `Mixup`: each sample i is mixed with sample B-1-i.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixSpec {
    /// Beta(alpha, alpha) for mixup; 0 disables mixup.
    pub mixup_alpha: f32,
    /// Beta(alpha, alpha) for cutmix; 0 disables cutmix.
    pub cutmix_alpha: f32,
    /// Probability that a batch (or element / pair) is mixed at all.
    pub prob: f32,
    /// When both are enabled, probability of cutmix rather than mixup.
    pub switch_prob: f32,
    pub mode: MixMode,
    /// Label smoothing applied to the soft targets.
    pub label_smoothing: f32,
    /// Number of classes for soft targets; 0 = labels a/b and lambda only.
    pub num_classes: u32,
    /// Schedule over epochs.
    pub schedule: MixSchedule,
}

impl Default for MixSpec {
    fn default() -> Self {
        MixSpec {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            mode: MixMode::Batch,
            label_smoothing: 0.0,
            num_classes: 0,
            schedule: MixSchedule::default(),
        }
    }
}

/// No mixing before `start_epoch`; from there both alphas ramp linearly and reach their
/// targets at `full_epoch` (alpha * (e - start + 1) / (full - start + 1)). `full_epoch ==
/// start_epoch` means full strength from `start_epoch`; a `full_epoch` before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixSchedule {
    pub start_epoch: u32,
    pub full_epoch: u32,
}

/// The mix parameters in force for one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochMix {
    pub mixup_alpha: f32,
    pub cutmix_alpha: f32,
    pub prob: f32,
    pub switch_prob: f32,
    pub mode: MixMode,
}

impl MixSpec {
    pub fn is_enabled(&self) -> bool {
        (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0) && self.prob > 0.0
    }

    /// The parameters for `epoch`, or `None` when no mixing happens in that epoch.
    pub fn at_epoch(&self, epoch: u64) -> Option<EpochMix> {
        if !self.is_enabled() {
            return None;
        }
        let start = u64::from(self.schedule.start_epoch);
        let full = u64::from(self.schedule.full_epoch);
        if epoch < start {
            return None;
        }
        let factor = if full <= start || epoch >= full {
            1.0
        } else {
            (epoch - start + 1) as f32 / (full - start + 1) as f32
        };
        Some(EpochMix {
            mixup_alpha: self.mixup_alpha * factor,
            cutmix_alpha: self.cutmix_alpha * factor,
            prob: self.prob,
            switch_prob: self.switch_prob,
            mode: self.mode,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalize {
    /// ImageNet statistics.
    fn default() -> Self {
        Normalize {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// Mixed pixel values rounded to bytes; no normalisation (the trainer normalises).
    Uint8,
    Float16,
    #[default]
    Float32,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::Uint8 => 1,
            DType::Float16 => 2,
            DType::Float32 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::Uint8 => "uint8",
            DType::Float16 => "float16",
            DType::Float32 => "float32",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Layout {
    #[default]
    #[serde(rename = "NCHW", alias = "nchw")]
    Nchw,
    #[serde(rename = "NHWC", alias = "nhwc")]
    Nhwc,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSpec {
    pub dtype: DType,
    pub layout: Layout,
}

/// Where a stage runs. `auto` picks the GPU when one is usable, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    #[default]
    Auto,
    Cpu,
    Gpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Placement {
    /// Per-image colour jitter. The CPU owns the lossy per-image ops by default.
    pub color: Device,
    /// Byte-level resize of the crops to the output size.
    pub resize: Device,
    /// Mixup / cutmix fused with normalisation and layout conversion.
    pub mix: Device,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            color: Device::Cpu,
            resize: Device::Auto,
            mix: Device::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// Leave the failing image out of its batch and report it in the batch's errors.
    #[default]
    Skip,
    /// Fail the whole batch.
    Fail,
}

/// What a damaged image is: one a lenient decoder takes, filling in what is missing (grey
/// below a truncation, a skipped scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DamagedPolicy {
    /// A per-image error, `truncated` or `damaged`, as `on_error` says.
    #[default]
    Reject,
    /// Decoded leniently and kept in the batch, listed in the batch's warnings.
    Accept,
}

fn check_prob(field: &str, p: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::spec(field, format!("must be in [0, 1], got {p}")));
    }
    Ok(())
}

fn check_factor(field: &str, f: f32) -> Result<()> {
    if !f.is_finite() || f < 0.0 {
        return Err(Error::spec(
            field,
            format!("must be finite and >= 0, got {f}"),
        ));
    }
    Ok(())
}

fn check_range(field: &str, r: [f32; 2], lo: f32, hi: f32) -> Result<()> {
    if !r[0].is_finite() || !r[1].is_finite() {
        return Err(Error::spec(field, "must be finite"));
    }
    if r[0] > r[1] {
        return Err(Error::spec(
            field,
            format!("min {} is greater than max {}", r[0], r[1]),
        ));
    }
    if r[0] <= lo || r[1] > hi {
        return Err(Error::spec(
            field,
            format!("must lie in ({lo}, {hi}], got [{}, {}]", r[0], r[1]),
        ));
    }
    Ok(())
}

impl PipelineSpec {
    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("size.width", self.size.width),
            ("size.height", self.size.height),
        ] {
            if v == 0 {
                return Err(Error::spec(name, "must be > 0"));
            }
            if v > MAX_OUTPUT_SIDE {
                return Err(Error::spec(
                    name,
                    format!("{v} exceeds the maximum output side {MAX_OUTPUT_SIDE}"),
                ));
            }
        }
        match &self.crop {
            CropSpec::RandomResized { scale, ratio } => {
                check_range("crop.scale", *scale, 0.0, 1.0)?;
                check_range("crop.ratio", *ratio, 0.0, 100.0)?;
            }
            CropSpec::Center { crop_pct } => {
                if !crop_pct.is_finite() || *crop_pct <= 0.0 || *crop_pct > 1.0 {
                    return Err(Error::spec(
                        "crop.crop_pct",
                        format!("must be in (0, 1], got {crop_pct}"),
                    ));
                }
            }
            CropSpec::Resize => {}
        }
        check_prob("flip_prob", self.flip_prob)?;
        check_factor("color.brightness", self.color.brightness)?;
        check_factor("color.contrast", self.color.contrast)?;
        check_factor("color.saturation", self.color.saturation)?;
        let m = &self.mix;
        check_factor("mix.mixup_alpha", m.mixup_alpha)?;
        check_factor("mix.cutmix_alpha", m.cutmix_alpha)?;
        check_prob("mix.prob", m.prob)?;
        check_prob("mix.switch_prob", m.switch_prob)?;
        if !(0.0..1.0).contains(&m.label_smoothing) {
            return Err(Error::spec(
                "mix.label_smoothing",
                format!("must be in [0, 1), got {}", m.label_smoothing),
            ));
        }
        if m.schedule.full_epoch < m.schedule.start_epoch {
            return Err(Error::spec(
                "mix.schedule.full_epoch",
                format!(
                    "{} is before start_epoch ({}): mixing reaches full strength at full_epoch, \
                     at or after start_epoch (equal: full strength from start_epoch)",
                    m.schedule.full_epoch, m.schedule.start_epoch
                ),
            ));
        }
        if m.num_classes > 1_000_000 {
            return Err(Error::spec("mix.num_classes", "must be <= 1000000"));
        }
        if self.placement.color == Device::Gpu {
            return Err(Error::spec(
                "placement.color",
                "colour jitter on the GPU is not supported yet (it comes with GPU decoding); use \"cpu\" or \"auto\"",
            ));
        }
        for c in 0..3 {
            if !self.normalize.mean[c].is_finite() {
                return Err(Error::spec(
                    format!("normalize.mean[{c}]"),
                    "must be finite",
                ));
            }
            let s = self.normalize.std[c];
            if !s.is_finite() || s <= 0.0 {
                return Err(Error::spec(
                    format!("normalize.std[{c}]"),
                    format!("must be finite and > 0, got {s}"),
                ));
            }
        }
        Ok(())
    }

    /// Parses TOML and validates.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let spec: PipelineSpec = toml::from_str(s).map_err(|e| Error::SpecParse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses JSON and validates.
    pub fn from_json_str(s: &str) -> Result<Self> {
        let spec: PipelineSpec =
            serde_json::from_str(s).map_err(|e| Error::SpecParse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a `.toml` or `.json` file (by extension) and validates.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::SpecParse(format!("{}: {e}", path.display())))?;
        let parsed = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        };
        parsed.map_err(|e| match e {
            Error::SpecParse(m) => Error::SpecParse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The spec as TOML, numbers as written (`0.08`, not `0.07999999821186066`).
    pub fn to_toml_string(&self) -> String {
        let Ok(mut value) = toml::Value::try_from(self) else {
            return String::new();
        };
        shortest_f32_floats(&mut value);
        toml::to_string_pretty(&value).unwrap_or_default()
    }

    /// Number of bytes of one output image.
    pub fn output_image_bytes(&self) -> usize {
        self.size.width as usize * self.size.height as usize * 3 * self.output.dtype.size_bytes()
    }
}

/// Every float of the spec is an `f32`, which serde widens to the nearest `f64`
/// (0.08f32 = 0.07999999821186066). Rewrites each as the shortest decimal that reads back as
/// the same `f32`, so a printed spec reads as it was written and parses to the same spec.
fn shortest_f32_floats(value: &mut toml::Value) {
    match value {
        toml::Value::Float(f) => {
            let narrow = *f as f32;
            if f64::from(narrow) == *f {
                *f = narrow.to_string().parse().unwrap_or(*f);
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(shortest_f32_floats),
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| shortest_f32_floats(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_fields_are_optional_mode_included() {
        let spec = PipelineSpec::from_toml_str("[crop]\nscale = [0.35, 1.0]\n").unwrap();
        assert_eq!(
            spec.crop,
            CropSpec::RandomResized {
                scale: [0.35, 1.0],
                ratio: default_ratio()
            }
        );
        let spec = PipelineSpec::from_toml_str("[crop]\nmode = \"center\"\n").unwrap();
        assert_eq!(spec.crop, CropSpec::Center { crop_pct: 0.875 });
        for (text, want) in [
            (
                "[crop]\nmode = \"center\"\nscale = [0.5, 1.0]\n",
                "crop.scale applies",
            ),
            ("[crop]\ncrop_pct = 0.9\n", "crop.crop_pct applies"),
            ("[crop]\nmode = \"zoom\"\n", "zoom"),
            ("[crop]\nsclae = [0.5, 1.0]\n", "sclae"),
        ] {
            let e = PipelineSpec::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let json = PipelineSpec::from_json_str(r#"{"crop": {"ratio": [0.5, 2.0]}}"#).unwrap();
        assert!(matches!(
            json.crop,
            CropSpec::RandomResized {
                ratio: [0.5, 2.0],
                ..
            }
        ));
    }

    #[test]
    fn printed_numbers_are_as_written_and_read_back_the_same() {
        let text = PipelineSpec::default().to_toml_string();
        for written in ["0.08", "1.3333334", "0.75", "0.485", "0.229"] {
            assert!(text.contains(written), "{written} missing from\n{text}");
        }
        assert!(!text.contains("9999"), "{text}");
        let mut spec = PipelineSpec::default();
        spec.color.brightness = 0.4;
        spec.mix.mixup_alpha = 0.2;
        spec.flip_prob = 0.1;
        let again = PipelineSpec::from_toml_str(&spec.to_toml_string()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn default_is_valid_and_roundtrips_through_toml_and_json() {
        let spec = PipelineSpec::default();
        spec.validate().unwrap();
        let t = spec.to_toml_string();
        assert_eq!(PipelineSpec::from_toml_str(&t).unwrap(), spec);
        let j = serde_json::to_string(&spec).unwrap();
        assert_eq!(PipelineSpec::from_json_str(&j).unwrap(), spec);
    }

    #[test]
    fn partial_toml_uses_defaults() {
        let spec = PipelineSpec::from_toml_str(
            r#"
            flip_prob = 0.0
            [size]
            width = 128
            height = 96
            [crop]
            mode = "center"
            [mix]
            mixup_alpha = 0.2
            mode = "elem"
            [mix.schedule]
            start_epoch = 2
            full_epoch = 5
            [output]
            dtype = "float16"
            layout = "NHWC"
            "#,
        )
        .unwrap();
        assert_eq!(spec.size.width, 128);
        assert_eq!(spec.crop, CropSpec::Center { crop_pct: 0.875 });
        assert_eq!(spec.mix.mode, MixMode::Elem);
        assert_eq!(spec.output.dtype, DType::Float16);
        assert_eq!(spec.output.layout, Layout::Nhwc);
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidSpec { field, .. } => field,
            other => panic!("expected InvalidSpec, got {other}"),
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        type Mutate = Box<dyn Fn(&mut PipelineSpec)>;
        let cases: Vec<(&str, Mutate)> = vec![
            ("size.width", Box::new(|s| s.size.width = 0)),
            ("size.height", Box::new(|s| s.size.height = 100_000)),
            ("flip_prob", Box::new(|s| s.flip_prob = 1.5)),
            ("flip_prob", Box::new(|s| s.flip_prob = f32::NAN)),
            ("color.brightness", Box::new(|s| s.color.brightness = -0.1)),
            (
                "color.saturation",
                Box::new(|s| s.color.saturation = f32::NAN),
            ),
            ("mix.mixup_alpha", Box::new(|s| s.mix.mixup_alpha = -1.0)),
            ("mix.prob", Box::new(|s| s.mix.prob = 2.0)),
            (
                "mix.label_smoothing",
                Box::new(|s| s.mix.label_smoothing = 1.0),
            ),
            ("normalize.std[1]", Box::new(|s| s.normalize.std[1] = 0.0)),
            (
                "crop.scale",
                Box::new(|s| {
                    s.crop = CropSpec::RandomResized {
                        scale: [0.9, 0.1],
                        ratio: default_ratio(),
                    }
                }),
            ),
            (
                "crop.ratio",
                Box::new(|s| {
                    s.crop = CropSpec::RandomResized {
                        scale: default_scale(),
                        ratio: [0.0, 1.0],
                    }
                }),
            ),
            (
                "crop.crop_pct",
                Box::new(|s| s.crop = CropSpec::Center { crop_pct: 0.0 }),
            ),
        ];
        for (field, mutate) in cases {
            let mut spec = PipelineSpec::default();
            mutate(&mut spec);
            assert_eq!(field_of(spec.validate().unwrap_err()), field);
        }
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        for text in [
            "flip_probability = 0.5",
            "[color]\nhue = 0.1",
            "[crop]\nmode = \"random_resized\"\nscales = [0.1, 1.0]",
            "[crop]\nmode = \"zoom\"",
            "[output]\ndtype = \"int16\"",
        ] {
            let err = PipelineSpec::from_toml_str(text).unwrap_err().to_string();
            let key = ["flip_probability", "hue", "scales", "zoom", "int16"]
                .into_iter()
                .find(|k| text.contains(k))
                .unwrap();
            assert!(err.contains(key), "{err} should name {key}");
        }
        let err = PipelineSpec::from_json_str(r#"{"mix": {"alpha": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("alpha"), "{err}");
    }

    #[test]
    fn mix_schedule_ramps_alpha() {
        let mix = MixSpec {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            schedule: MixSchedule {
                start_epoch: 2,
                full_epoch: 5,
            },
            ..MixSpec::default()
        };
        assert!(mix.at_epoch(0).is_none());
        assert!(mix.at_epoch(1).is_none());
        let a2 = mix.at_epoch(2).unwrap();
        assert!((a2.mixup_alpha - 0.2).abs() < 1e-6);
        assert!((a2.cutmix_alpha - 0.25).abs() < 1e-6);
        assert!((mix.at_epoch(4).unwrap().mixup_alpha - 0.6).abs() < 1e-6);
        assert_eq!(mix.at_epoch(5).unwrap().mixup_alpha, 0.8);
        assert_eq!(mix.at_epoch(100).unwrap().mixup_alpha, 0.8);
        assert!(MixSpec::default().at_epoch(3).is_none());
    }
}

"""The pipeline spec as typed Python objects, mirroring `PipelineSpec` in the proto.

Defaults are the usual ImageNet training recipe, the same as the server's: RandomResizedCrop to
224x224 with torchvision's scale/ratio ranges, horizontal flip with probability 0.5, no colour
jitter, no mixing, ImageNet mean/std, float32 NCHW. Enumerations are lower-case strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from augserve.v1 import augserve_pb2 as pb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CROP_MODES = {
    "random_resized": pb.CROP_MODE_RANDOM_RESIZED,
    "center": pb.CROP_MODE_CENTER,
    "resize": pb.CROP_MODE_RESIZE,
}
_MIX_MODES = {"batch": pb.MIX_MODE_BATCH, "pair": pb.MIX_MODE_PAIR, "elem": pb.MIX_MODE_ELEM}
DTYPES = {"uint8": pb.DTYPE_UINT8, "float16": pb.DTYPE_FLOAT16, "float32": pb.DTYPE_FLOAT32}
LAYOUTS = {"nchw": pb.LAYOUT_NCHW, "nhwc": pb.LAYOUT_NHWC}
_DEVICES = {"auto": pb.DEVICE_AUTO, "cpu": pb.DEVICE_CPU, "gpu": pb.DEVICE_GPU}
_ERROR_POLICIES = {"skip": pb.ERROR_POLICY_SKIP, "fail": pb.ERROR_POLICY_FAIL}
_DAMAGED_POLICIES = {"reject": pb.DAMAGED_POLICY_REJECT, "accept": pb.DAMAGED_POLICY_ACCEPT}
TAILS = {"pad": pb.TAIL_PAD, "drop": pb.TAIL_DROP, "uneven": pb.TAIL_UNEVEN}


def enum_value(table: dict[str, int], name: str, what: str) -> int:
    """The proto enum value for `name`, or a ValueError listing the accepted names."""
    try:
        return table[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"{what}: unknown value {name!r}; expected one of {sorted(table)}") from None


@dataclass(frozen=True)
class Crop:
    """How the source region is chosen. `scale` and `ratio` apply to random_resized,
    `crop_pct` to center (resize the shorter side to size / crop_pct, take the centre)."""

    mode: str = "random_resized"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_pct: float = 0.875

    def to_proto(self) -> pb.Crop:
        mode = enum_value(_CROP_MODES, self.mode, "crop.mode")
        if mode == pb.CROP_MODE_RANDOM_RESIZED:
            return pb.Crop(mode=mode, scale=list(self.scale), ratio=list(self.ratio))
        if mode == pb.CROP_MODE_CENTER:
            return pb.Crop(mode=mode, crop_pct=self.crop_pct)
        return pb.Crop(mode=mode)


@dataclass(frozen=True)
class ColorJitter:
    """Each factor f draws a multiplier from [max(0, 1-f), 1+f] per image; 0 is off."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def to_proto(self) -> pb.ColorJitter:
        return pb.ColorJitter(
            brightness=self.brightness, contrast=self.contrast, saturation=self.saturation
        )


@dataclass(frozen=True)
class Mix:
    """Mixup / cutmix with timm's semantics; both alphas 0 means off. `num_classes > 0` makes each
    batch carry smoothed soft targets. The alphas ramp up linearly from `start_epoch` to full
    strength at `full_epoch`."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.0
    num_classes: int = 0
    start_epoch: int = 0
    full_epoch: int = 0

    def to_proto(self) -> pb.Mix:
        return pb.Mix(
            mixup_alpha=self.mixup_alpha,
            cutmix_alpha=self.cutmix_alpha,
            prob=self.prob,
            switch_prob=self.switch_prob,
            mode=enum_value(_MIX_MODES, self.mode, "mix.mode"),
            label_smoothing=self.label_smoothing,
            num_classes=self.num_classes,
            start_epoch=self.start_epoch,
            full_epoch=self.full_epoch,
        )


@dataclass(frozen=True)
class Normalize:
    """(x / 255 - mean) / std per channel, for float outputs."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_proto(self) -> pb.Normalize:
        return pb.Normalize(mean=list(self.mean), std=list(self.std))


@dataclass(frozen=True)
class Placement:
    """Where each stage runs: "auto" (the GPU when the server has one), "cpu" or "gpu"."""

    color: str = "cpu"
    resize: str = "auto"
    mix: str = "auto"

    def to_proto(self) -> pb.Placement:
        return pb.Placement(
            color=enum_value(_DEVICES, self.color, "placement.color"),
            resize=enum_value(_DEVICES, self.resize, "placement.resize"),
            mix=enum_value(_DEVICES, self.mix, "placement.mix"),
        )


@dataclass(frozen=True)
class PipelineSpec:
    """What the server does to each image and each batch.

    >>> PipelineSpec(dtype="float16", mix=Mix(mixup_alpha=0.2, num_classes=1000))
    """

    width: int = 224
    height: int = 224
    crop: Crop = field(default_factory=Crop)
    flip_prob: float = 0.5
    color: ColorJitter = field(default_factory=ColorJitter)
    mix: Mix = field(default_factory=Mix)
    normalize: Normalize = field(default_factory=Normalize)
    dtype: str = "float32"
    layout: str = "nchw"
    placement: Placement = field(default_factory=Placement)
    on_error: str = "skip"
    # A truncated or damaged JPEG: "reject" (a per-image error) or "accept" (kept in the
    # batch, listed in Batch.warnings).
    on_damaged: str = "reject"
    # Decode JPEGs whose crop is at least twice the output at 1/2-1/8 scale (libjpeg-turbo's
    # IDCT), then resize: faster on large photos, pixels slightly different (default exact).
    dct_scaling: bool = False

    @classmethod
    def center_crop(cls, size: int = 224, crop_pct: float = 0.875, **kw) -> PipelineSpec:
        """The usual evaluation recipe: centre crop, no flip."""
        return cls(
            width=size, height=size, crop=Crop(mode="center", crop_pct=crop_pct), flip_prob=0.0, **kw
        )

    def to_proto(self) -> pb.PipelineSpec:
        return pb.PipelineSpec(
            width=self.width,
            height=self.height,
            crop=self.crop.to_proto(),
            flip_prob=self.flip_prob,
            color=self.color.to_proto(),
            mix=self.mix.to_proto(),
            normalize=self.normalize.to_proto(),
            dtype=enum_value(DTYPES, self.dtype, "dtype"),
            layout=enum_value(LAYOUTS, self.layout, "layout"),
            placement=self.placement.to_proto(),
            on_error=enum_value(_ERROR_POLICIES, self.on_error, "on_error"),
            on_damaged=enum_value(_DAMAGED_POLICIES, self.on_damaged, "on_damaged"),
            dct_scaling=self.dct_scaling,
        )

"""Requests that cannot be served as asked are refused, naming the field, instead of giving
wrong batches; valid JPEGs the decoder does not take say so (issue: clear refusals)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import augserve
from augserve import Mix, PipelineSpec

SMALL = dict(width=32, height=32)


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 40), (20, 120, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_num_classes_below_the_datasets_classes_is_refused(client):
    spec = PipelineSpec(**SMALL, mix=Mix(mixup_alpha=0.2, num_classes=5))  # the demo has 10
    with pytest.raises(augserve.InvalidArgumentError, match=r"mix.num_classes.*10 classes"):
        next(client.stream("demo", spec, batch_size=16))
    ok = PipelineSpec(**SMALL, mix=Mix(mixup_alpha=0.2, num_classes=10))
    b = next(client.stream("demo", ok, batch_size=16))
    assert b.soft_targets.shape == (16, 10)


def test_a_label_at_or_past_num_classes_is_refused_by_augment(client):
    spec = PipelineSpec(**SMALL, mix=Mix(num_classes=5))
    with pytest.raises(augserve.InvalidArgumentError, match=r"spec.mix.num_classes.*label is 7"):
        client.augment([jpeg(), jpeg()], spec, labels=[0, 7])
    assert len(client.augment([jpeg(), jpeg()], spec, labels=[0, 4])) == 2


def test_a_schedule_that_ends_before_it_starts_is_refused(client):
    spec = PipelineSpec(**SMALL, mix=Mix(mixup_alpha=0.2, start_epoch=5, full_epoch=2))
    with pytest.raises(augserve.InvalidArgumentError, match=r"mix.schedule.full_epoch"):
        next(client.stream("demo", spec, batch_size=16))


def test_start_batch_past_the_end_of_the_epoch_is_refused(client):
    # 320 samples in batches of 64: 5 batches; start_batch 5 is the (empty) end, 6 is past it.
    with pytest.raises(augserve.InvalidArgumentError, match=r"start_batch.*5 batches"):
        next(client.stream("demo", PipelineSpec(**SMALL), batch_size=64, start_batch=6, epochs=1, resume=False))
    assert list(client.stream("demo", PipelineSpec(**SMALL), batch_size=64, start_batch=5, epochs=1)) == []


def test_a_lossless_jpeg_fails_with_its_own_reason(client):
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = 0xC3  # SOF3: lossless
    b = client.augment([bytes(data), jpeg()], PipelineSpec(**SMALL))
    assert len(b) == 1
    (err,) = b.errors
    assert err.code == "unsupported_jpeg" and err.reason.startswith("unsupported JPEG: lossless"), err


def test_a_truncated_jpeg_is_reported_or_kept_with_a_warning(client):
    out = io.BytesIO()
    noise = Image.effect_noise((160, 120), 60).convert("RGB")
    noise.save(out, "JPEG", quality=90)
    cut = out.getvalue()[: len(out.getvalue()) * 4 // 10]  # 40 % of the bytes
    b = client.augment([cut, jpeg()], PipelineSpec(**SMALL))
    assert len(b) == 1 and not b.warnings
    (err,) = b.errors
    assert err.code == "truncated", err
    kept = client.augment([cut, jpeg()], PipelineSpec(**SMALL, on_damaged="accept"))
    assert len(kept) == 2 and not kept.errors
    (warn,) = kept.warnings
    assert warn.sample_id == 0 and warn.code == "truncated", warn
    with pytest.raises(ValueError, match="on_damaged"):
        PipelineSpec(on_damaged="maybe").to_proto()

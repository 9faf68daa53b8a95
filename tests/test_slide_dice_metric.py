"""SlideDiceMetric: MONAI's metric protocol over slide files; SlideMeanDice as an evaluator's metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from monai_shf.handlers import SlideMeanDice
from monai_shf.metrics import SlideDiceMetric, slide_file
from monai_shf.slide import open_slide, slide_dice


@pytest.fixture()
def pairs(tmp_path):
    """Three (mask, label) slide pairs of 3 classes; the third label has no class 2."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        label = rng.integers(0, 3 if i < 2 else 2, (96, 160)).astype(np.uint8)
        mask = label.copy()
        flip = rng.random(label.shape) < 0.2 * (i + 1)
        mask[flip] = rng.integers(0, 3, int(flip.sum()))
        paths = tmp_path / f"mask{i}.tif", tmp_path / f"label{i}.tif"
        tifffile.imwrite(paths[0], mask, tile=(32, 32), compression="zlib")
        tifffile.imwrite(paths[1], label, tile=(64, 64), compression="zlib")
        out.append(paths)
    return out


def test_metric_buffers_per_slide_dice_and_reduces_like_monai(pairs):
    metric = SlideDiceMetric(num_classes=3)
    first = metric(y_pred=[str(pairs[0][0]), pairs[1][0]], y=[pairs[0][1], pairs[1][1]])
    assert first.shape == (2, 3) and first.dtype == torch.float32
    metric(y_pred=pairs[2][0], y=pairs[2][1])  # one slide at a time works too
    expected = np.stack([slide_dice(m, t, 3) for m, t in pairs])
    assert math.isnan(expected[2, 2])
    np.testing.assert_allclose(metric.get_buffer().numpy(), expected, rtol=1e-6)
    # "mean" as MONAI's DiceMetric: per sample over classes (NaN ignored), then over samples
    per_sample = np.nanmean(expected, axis=1)
    np.testing.assert_allclose(float(metric.aggregate()), per_sample.mean(), rtol=1e-6)
    np.testing.assert_allclose(metric.aggregate("mean_batch").numpy(), np.nanmean(expected, axis=0), rtol=1e-6)
    metric.reset()
    assert metric.get_buffer() is None


def test_metric_without_background_and_with_open_slides_or_meta_tensors(pairs):
    metric = SlideDiceMetric(num_classes=3, include_background=False, get_not_nans=True)
    (mask, label) = pairs[2]
    with open_slide(mask) as opened:
        values = metric([opened], [MetaTensor(torch.zeros(1), meta={"filename_or_obj": str(label)})])
    assert values.shape == (1, 2)
    value, not_nans = metric.aggregate()
    assert float(not_nans) == 1.0 and float(value) == pytest.approx(slide_dice(mask, label, 3)[1])


def test_metric_bad_input(pairs):
    metric = SlideDiceMetric(num_classes=3)
    with pytest.raises(ValueError, match="y_pred holds 2 mask slide"):
        metric([pairs[0][0], pairs[1][0]], [pairs[0][1]])
    with pytest.raises(TypeError, match=r"y\[0\] must be a slide file path"):
        metric([pairs[0][0]], [torch.zeros(2)])
    with pytest.raises(ValueError, match="y is required"):
        metric(pairs[0][0])
    with pytest.raises(ValueError, match="num_classes"):
        SlideDiceMetric(num_classes=0)
    with pytest.raises(TypeError, match="data"):
        slide_file(3, "data")


def test_slide_mean_dice_is_the_metric_over_engine_outputs(pairs):
    outputs = [[{"pred_path": str(m), "label_slide": str(t)}] for m, t in pairs]
    engine = Engine(lambda e, batch: batch)
    handler = SlideMeanDice(num_classes=3, include_background=False)
    handler.attach(engine, "val_mean_dice")
    engine.run(outputs, max_epochs=1)
    expected = np.stack([slide_dice(m, t, 3)[1:] for m, t in pairs])
    assert engine.state.metrics["val_mean_dice"] == pytest.approx(np.nanmean(np.nanmean(expected, axis=1)), rel=1e-6)


def test_slide_mean_dice_names_missing_keys_and_old_configs(pairs):
    engine = Engine(lambda e, batch: batch)
    SlideMeanDice(num_classes=3).attach(engine, "dice")
    with pytest.raises(KeyError, match="no 'label_slide'"):
        engine.run([[{"pred_path": str(pairs[0][0])}]], max_epochs=1)
    with pytest.raises(TypeError, match="replace dice_key"):
        SlideMeanDice(dice_key="slide_dice")

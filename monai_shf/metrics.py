"""MONAI metrics of SHF results that cannot be computed from in-memory tensors.

:class:`SlideDiceMetric` is the full-resolution Dice of whole-slide masks: its inputs are the *files*
(a mask written tile by tile by :func:`~monai_shf.slide.write_slide_mask` and its label slide), read
back block by block by :func:`~monai_shf.slide.slide_dice`, so no slide-sized array exists. It is a
MONAI ``CumulativeIterationMetric``: call it per batch, ``aggregate()`` at the end (buffers are gathered
across ranks under DDP), ``reset()`` between rounds, or wrap it in ``IgniteMetricHandler``
(:class:`monai_shf.handlers.SlideMeanDice` does) to use it as an evaluator's key metric.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from monai_shf.slide import Slide, slide_dice
from monai_shf.validation import check_bool, check_int

__all__ = ["SlideDiceMetric", "slide_file"]


def slide_file(value: Any, name: str) -> str:
    """The file of a slide given as a path, an open :class:`~monai_shf.slide.Slide` or a MetaTensor (its
    ``filename_or_obj``); else a ``TypeError`` naming ``name``."""
    if isinstance(value, MetaTensor):
        value = value.meta.get("filename_or_obj")
    if isinstance(value, Slide):
        return os.fspath(value.path)
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"{name} must be a slide file path (or an open Slide), got {type(value).__name__}.")
    return os.fspath(value)


class SlideDiceMetric(CumulativeIterationMetric):
    """Per-class full-resolution Dice of mask slides against label slides, accumulated over iterations.

    ``metric(y_pred=masks, y=labels)`` takes one slide or a sequence of ``N`` slides each (paths, open
    slides, or MetaTensors naming their file), computes a ``(N, K)`` float32 Dice (class 0 first, NaN
    where ``ignore_empty`` and a class is absent from the label) and appends it to the buffer;
    ``aggregate()`` reduces the ``(N_total, K)`` buffer with ``reduction`` (NaN ignored), as MONAI's
    ``DiceMetric`` does.

    Args:
        num_classes: ``K`` (background included); every value of both slides must lie in ``[0, K)``.
        include_background: keep class 0 in the buffer and the reduction.
        reduction: MONAI metric reduction (``"mean"``, ``"mean_batch"``, ``"none"``, ...).
        get_not_nans: ``aggregate`` also returns the count of non-NaN values.
        ignore_empty: as MONAI's ``compute_dice`` (see :func:`~monai_shf.slide.slide_dice`).

    Memory: a few level-0 blocks of each slide at a time (about 3 bytes per block pixel), never a slide.
    """

    def __init__(
        self,
        num_classes: int,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        ignore_empty: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.include_background = check_bool(include_background, "include_background")
        self.reduction, self.get_not_nans = reduction, check_bool(get_not_nans, "get_not_nans")
        self.ignore_empty = check_bool(ignore_empty, "ignore_empty")

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Dice of each ``(mask, label)`` pair, ``(N, K)`` (``(N, K - 1)`` without background), buffered."""
        masks, labels = _slides(y_pred, "y_pred"), _slides(y, "y")
        if len(masks) != len(labels):
            raise ValueError(f"y_pred holds {len(masks)} mask slide(s) but y holds {len(labels)} label slide(s).")
        values = self._compute_tensor(masks, labels)
        self.extend(values)
        return values

    def _compute_tensor(self, y_pred: Sequence[str], y: Sequence[str] | None = None) -> torch.Tensor:  # type: ignore[override]
        rows = [
            torch.as_tensor(slide_dice(mask, label, self.num_classes, self.ignore_empty), dtype=torch.float32)
            for mask, label in zip(y_pred, y or ())
        ]
        values = torch.stack(rows) if rows else torch.zeros((0, self.num_classes), dtype=torch.float32)
        return values if self.include_background else values[:, 1:]

    def aggregate(self, reduction: MetricReduction | str | None = None) -> Any:
        """The reduced Dice (and the non-NaN counts when ``get_not_nans``)."""
        values, not_nans = do_metric_reduction(self.get_buffer(), reduction or self.reduction)
        return (values, not_nans) if self.get_not_nans else values


def _slides(value: Any, name: str) -> list[str]:
    if value is None:
        raise ValueError(f"{name} is required: the slide file(s) to compare.")
    if isinstance(value, (list, tuple)):
        return [slide_file(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return [slide_file(value, name)]

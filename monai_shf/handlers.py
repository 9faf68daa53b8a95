"""Ignite handlers for SHF workflows: checkpoints that a crash cannot truncate.

MONAI's ``CheckpointSaver`` writes checkpoints in place (``atomic=False``), so a run killed while
saving leaves a truncated file, and with a fixed filename it deletes the previous checkpoint before
writing the new one. :class:`AtomicCheckpointSaver` takes MONAI's arguments and saves on the same events
(ignite ``Checkpoint`` objects with an atomic ``save_handler``, :class:`AtomicDiskSaver`) but writes
every checkpoint to a temporary file in the same folder, fsyncs it and renames it over the target
(``os.replace`` is atomic on POSIX): a reader sees the old checkpoint or the new one, never half of
one. It also offers a fixed ``latest_filename`` for the interval checkpoint, so resuming needs no glob.

:class:`TensorBoardForestImageHandler` logs one validation sample per validation round as a picture:
its forest drawn over the depatched image, the depatched prediction and the ground truth (MONAI's
``TensorBoardImageHandler`` would plot the token tensors, which are not images).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import IgniteMetricHandler, TensorBoardHandler
from monai.utils import is_scalar

from monai_shf.metrics import SlideDiceMetric
from monai_shf.transforms.functional import depatch, forest_from_trace
from monai_shf.utils import atomic_write
from monai_shf.validation import check_int, to_numpy
from monai_shf.visualize import forest_overlay, label_rgb, panels

__all__ = [
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "SlideMeanDice",
    "TensorBoardForestImageHandler",
]


class AtomicDiskSaver(BaseSaveHandler):
    """Save handler writing ``dirname/filename`` atomically (optionally always under one fixed name).

    With a fixed name the old checkpoint is replaced by the rename itself, so ``remove`` keeps it.
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        self.dirname, self.filename = str(dirname), filename
        os.makedirs(self.dirname, exist_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)

        atomic_write(os.path.join(self.dirname, self.filename or filename), write)

    def remove(self, filename: str) -> None:
        if self.filename is not None:
            return  # the next save replaces it atomically; deleting first would open a gap
        path = os.path.join(self.dirname, filename)
        if os.path.exists(path):
            os.remove(path)


class AtomicCheckpointSaver:
    """Checkpoint handler with MONAI ``CheckpointSaver``'s arguments that writes atomically (see the module
    docstring): ignite ``Checkpoint`` objects whose ``save_handler`` is an :class:`AtomicDiskSaver`.

    Args:
        save_dir: folder of the checkpoints.
        save_dict: the objects to save, e.g. ``{"model": net, "optimizer": opt, "trainer": engine}``.
        name: logger name (default: the engine's logger).
        file_prefix: prefix of the numbered file names.
        save_final: save at ``COMPLETED`` and, before re-raising, at ``EXCEPTION_RAISED``.
        final_filename: fixed name of the final checkpoint (default ``..._final_iteration=N.pt``).
        save_key_metric: save when the key metric beats all earlier values.
        key_metric_name: metric in ``engine.state.metrics`` (default ``engine.state.key_metric_name``).
        key_metric_n_saved: how many best checkpoints to keep.
        key_metric_filename: fixed name of the best checkpoint (then ``key_metric_n_saved`` must be 1).
        key_metric_save_state: also store the best-score tracking in the best checkpoint.
        key_metric_greater_or_equal: an equal score replaces the kept checkpoint.
        key_metric_negative_sign: smaller is better (the score is negated).
        epoch_level: ``save_interval`` counts epochs (else iterations).
        save_interval: save every N epochs/iterations (0: never).
        n_saved: how many interval checkpoints to keep (``None``: all).
        latest_filename: fixed name of the interval checkpoint, e.g. ``"latest.pt"``; by default
            numbered names (``..._epoch=N.pt``) as in MONAI.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        name: str | None = None,
        file_prefix: str = "",
        save_final: bool = False,
        final_filename: str | None = None,
        save_key_metric: bool = False,
        key_metric_name: str | None = None,
        key_metric_n_saved: int = 1,
        key_metric_filename: str | None = None,
        key_metric_save_state: bool = False,
        key_metric_greater_or_equal: bool = False,
        key_metric_negative_sign: bool = False,
        epoch_level: bool = True,
        save_interval: int = 0,
        n_saved: int | None = None,
        latest_filename: str | None = None,
    ) -> None:
        if save_dir is None:
            raise ValueError("save_dir must name the folder of the checkpoints, got None.")
        if not save_dict:
            raise ValueError("save_dict must map names to the objects to save, got an empty mapping.")
        key_metric_n_saved = check_int(key_metric_n_saved, "key_metric_n_saved", 1)
        if key_metric_filename is not None and key_metric_n_saved > 1:
            raise ValueError(
                f"key_metric_filename={key_metric_filename!r} keeps one best checkpoint, "
                f"got key_metric_n_saved={key_metric_n_saved}."
            )
        self.save_dir, self.save_dict = str(save_dir), save_dict
        self.epoch_level, self.save_interval = bool(epoch_level), check_int(save_interval, "save_interval", 0)
        self.name, self.logger = name, logging.getLogger(name)
        self.final_filename = final_filename
        self.key_metric_name, self.key_metric_negative_sign = key_metric_name, bool(key_metric_negative_sign)

        def checkpoint(filename: str | None, score_function: Callable, score_name: str, **kwargs: Any) -> Checkpoint:
            return Checkpoint(
                to_save=self.save_dict,
                save_handler=AtomicDiskSaver(self.save_dir, filename),
                filename_prefix=file_prefix,
                score_function=score_function,
                score_name=score_name,
                **kwargs,
            )

        self.final_checkpoint = (
            checkpoint(final_filename, lambda engine: engine.state.iteration, "final_iteration", n_saved=1)
            if save_final
            else None
        )
        self.key_metric_checkpoint = (
            checkpoint(
                key_metric_filename,
                self._key_score,
                "key_metric",
                n_saved=key_metric_n_saved,
                include_self=key_metric_save_state,
                greater_or_equal=key_metric_greater_or_equal,
            )
            if save_key_metric
            else None
        )
        self.interval_checkpoint = (
            checkpoint(
                latest_filename,
                lambda engine: engine.state.epoch if self.epoch_level else engine.state.iteration,
                "epoch" if self.epoch_level else "iteration",
                n_saved=n_saved,
            )
            if self.save_interval > 0
            else None
        )

    def _key_score(self, engine: Engine) -> float:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if not isinstance(name, str):
            raise ValueError(
                "save_key_metric=True needs key_metric_name or an engine with a key metric, "
                f"got key_metric_name={self.key_metric_name!r}."
            )
        metric = engine.state.metrics[name]
        if not is_scalar(metric):
            warnings.warn(f"key metric {name!r} is not a scalar ({metric!r}): no checkpoint saved.", stacklevel=2)
            return -1.0
        return -float(metric) if self.key_metric_negative_sign else float(metric)

    def attach(self, engine: Engine) -> None:
        """Save on the configured events of ``engine`` (a trainer or an evaluator)."""
        if self.name is None:
            self.logger = engine.logger
        if self.final_checkpoint is not None:
            engine.add_event_handler(Events.COMPLETED, self.completed)
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        if self.key_metric_checkpoint is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.key_metric_checkpoint)
        if self.interval_checkpoint is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self.interval_checkpoint)

    def completed(self, engine: Engine) -> None:
        """Save the final checkpoint (replacing an earlier final one)."""
        if self.final_checkpoint is None:
            raise RuntimeError("completed() needs save_final=True.")
        self.final_checkpoint(engine)
        self.logger.info(f"Saved final checkpoint: {self.final_checkpoint.last_checkpoint}")

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """Save the final checkpoint, then re-raise ``e`` (ignite stops at the first handler of this event)."""
        self.completed(engine)
        raise e

    def state_dict(self) -> dict:
        """The key-metric tracking (best scores so far), so that saving it with the trainer lets a
        resumed run keep the old best checkpoint unless it beats it (``load_state_dict`` restores)."""
        return self.key_metric_checkpoint.state_dict() if self.key_metric_checkpoint is not None else {}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the key-metric tracking saved by :meth:`state_dict` (nothing to do without a key metric)."""
        if self.key_metric_checkpoint is not None and state_dict:
            self.key_metric_checkpoint.load_state_dict(state_dict)


def _slide_pairs(mask_key: str, label_key: str, output: Sequence[Mapping] | Mapping) -> tuple[list, list]:
    """``([mask file of each sample], [label file of each sample])`` from the (decollated) engine output."""
    if isinstance(output, Mapping):
        output = [output]
    for i, sample in enumerate(output):
        for key in (mask_key, label_key):
            if key not in sample:
                raise KeyError(
                    f"SlideMeanDice: engine output sample {i} has no {key!r} (keys: {list(sample)}); the "
                    f"postprocessing must put the mask file under mask_key and the label slide under label_key."
                )
    return [sample[mask_key] for sample in output], [sample[label_key] for sample in output]


class SlideMeanDice(IgniteMetricHandler):
    """Mean full-resolution Dice of whole slides over an evaluation: :class:`~monai_shf.metrics.SlideDiceMetric`
    on the mask and label files that the (decollated) engine output names under ``mask_key`` and ``label_key``.

    Use it as ``key_val_metric`` of a ``SupervisedEvaluator`` after a postprocessing that writes the mask
    (:class:`~monai_shf.transforms.slide.SaveSlideMaskd` stores its path) and copies the label slide's path
    into the output (a key the batch does not have: MONAI's engines route keys of the batch back to the
    batch). Reduced across ranks like any MONAI metric; ``save_details`` keeps the per-slide values.

    Args:
        num_classes: ``K``.
        mask_key: key of the written mask's path.
        label_key: key of the label slide's path.
        include_background: average class 0 too.
        save_details: keep per-slide values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        mask_key: str = "pred_path",
        label_key: str = "label_slide",
        include_background: bool = False,
        save_details: bool = True,
        **legacy: Any,
    ):
        if "dice_key" in legacy:
            raise TypeError(
                "SlideMeanDice computes the slide Dice itself since bundle 0.4.0 of shf_wsi_segmentation: replace dice_key (and the SlideDiced "
                "postprocessing step) by num_classes, mask_key (the mask path) and label_key (the label slide path)."
            )
        if legacy:
            raise TypeError(f"SlideMeanDice got unexpected arguments {sorted(legacy)}.")
        if num_classes is None:
            raise TypeError("SlideMeanDice needs num_classes (K, background included).")
        super().__init__(
            metric_fn=SlideDiceMetric(num_classes, include_background=include_background),
            output_transform=partial(_slide_pairs, mask_key, label_key),
            save_details=save_details,
        )


def _class_map(x: Any) -> np.ndarray:
    """``(K, *spatial)`` one-hot/probabilities (K > 1) or ``(1, *spatial)`` labels to ``(*spatial)`` int64."""
    x = to_numpy(x)
    return (x.argmax(0) if x.shape[0] > 1 else np.rint(x[0])).astype(np.int64)


class TensorBoardForestImageHandler(TensorBoardHandler):
    """Log one validation sample per round to TensorBoard: forest overlay, depatched prediction, truth.

    Attach it to a MONAI evaluator whose batch carries SHF image tokens with their patch record (as the
    bundles' ``HierarchicalPatchd`` writes them) and whose (decollated) output carries the depatched
    prediction. On the first iteration of each evaluation it writes one ``(H, W, 3)`` picture: the
    forest drawn over the depatched image tokens (the image as the network sees it), the prediction
    (argmax over classes) and the reference label, side by side. 3D: the middle slice along the last
    axis. The step is the evaluator's epoch (the trainer's epoch under ``ValidationHandler``).

    A writer the handler creates is its own (MONAI's ``TensorBoardHandler``): it is closed when the
    engine completes (a later run reopens it), a writer passed in is left to its owner.

    Args:
        summary_writer: a ``SummaryWriter``; default: a new one writing to ``log_dir``.
        log_dir: TensorBoard folder when no writer is given.
        tag: image tag.
        image_key: batch key of the image tokens ``(C, L, p, ...)`` with their patch record.
        pred_key: output key of the depatched prediction ``(K, *spatial)``.
        label_key: key (output or batch) of the reference label ``(K, *spatial)`` one-hot or ``(1, *spatial)``;
            ``None`` to leave it out.
        index: which sample of the first batch to show.
        global_iter_transform: maps the evaluator's epoch to the TensorBoard step.
    """

    def __init__(
        self,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        tag: str = "validation_forest",
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str | None = "reference_label",
        index: int = 0,
        global_iter_transform: Callable[[int], int] = lambda x: x,
    ) -> None:
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.tag = str(tag)
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.index = check_int(index, "index", 0)
        self.global_iter_transform = global_iter_transform
        self._pending = True

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._arm)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.close())
        engine.add_event_handler(Events.TERMINATE, lambda _: self.close())

    @property
    def writer(self) -> Any:
        """The ``SummaryWriter`` the pictures go to."""
        return self._writer

    def _arm(self, engine: Engine) -> None:
        self._pending = True

    def _item(self, data: Any) -> Mapping:
        item = data[self.index] if isinstance(data, (list, tuple)) else data
        if not isinstance(item, Mapping):
            raise TypeError(
                f"TensorBoardForestImageHandler needs dict samples (decollated), got {type(item).__name__}."
            )
        return item

    def picture(self, batch_item: Mapping, output_item: Mapping) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 panels of one sample (see the class docstring)."""
        tokens = batch_item[self.image_key]
        forest, _ = forest_from_trace(tokens)
        image = depatch(tokens, forest, mode="linear")
        images = [forest_overlay(image, forest), label_rgb(_class_map(output_item[self.pred_key]))]
        titles = [f"forest: {forest.num_leaves} leaves", "prediction (depatched)"]
        if self.label_key is not None:
            label = output_item.get(self.label_key, batch_item.get(self.label_key))
            if label is None:
                raise KeyError(f"label_key {self.label_key!r} is in neither the output nor the batch.")
            images.append(label_rgb(_class_map(label)))
            titles.append("ground truth")
        return panels(images, titles, width=320)

    def __call__(self, engine: Engine) -> None:
        if not self._pending:
            return
        self._pending = False
        rgb = self.picture(self._item(engine.state.batch), self._item(engine.state.output))
        step = self.global_iter_transform(engine.state.epoch)
        self.writer.add_image(self.tag, rgb, step, dataformats="HWC")
        self.writer.flush()

"""Ignite handlers for SHF workflows: checkpoints that a crash cannot truncate.

MONAI's ``CheckpointSaver`` writes checkpoints in place (``atomic=False``), so a run killed while
saving leaves a truncated file, and with a fixed filename it deletes the previous checkpoint before
writing the new one. :class:`AtomicCheckpointSaver` keeps MONAI's interface and behaviour but writes
every checkpoint to a temporary file in the same folder, fsyncs it and renames it over the target
(``os.replace`` is atomic on POSIX): a reader sees the old checkpoint or the new one, never half of
one. It also offers a fixed ``latest_filename`` for the interval checkpoint, so resuming needs no glob.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from monai_shf.utils import atomic_write

__all__ = ["AtomicDiskSaver", "AtomicCheckpointSaver"]


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


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` with atomic writes (see the module docstring).

    Args:
        latest_filename: fixed name of the interval checkpoint (``save_interval > 0``), e.g.
            ``"latest.pt"``; by default MONAI's numbered names (``..._epoch=N.pt``) are kept.
        Others: as ``monai.handlers.CheckpointSaver``.
    """

    def __init__(self, *args: Any, latest_filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._final_checkpoint is not None:
            self._final_checkpoint.save_handler = AtomicDiskSaver(self.save_dir, self._final_filename)
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.save_handler = AtomicDiskSaver(self.save_dir, kwargs.get("key_metric_filename"))
        if self._interval_checkpoint is not None:
            self._interval_checkpoint.save_handler = AtomicDiskSaver(self.save_dir, latest_filename)

    def state_dict(self) -> dict:
        """The key-metric tracking (best scores so far), so that saving it with the trainer lets a
        resumed run keep the old best checkpoint unless it beats it (``load_state_dict`` restores)."""
        return self._key_metric_checkpoint.state_dict() if self._key_metric_checkpoint is not None else {}

"""Per-rank data in distributed runs: each process caches and reads only its own part of a datalist."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.data import partition_dataset

from monai_shf.validation import check_int

__all__ = ["rank_partition"]

logger = logging.getLogger(__name__)


def rank_partition(
    data: Sequence[Any],
    shuffle: bool = False,
    even_divisible: bool = False,
    seed: int = 0,
    name: str = "data",
) -> list[Any]:
    """This process's part of ``data`` when a ``torch.distributed`` process group is up, else all of it.

    Wraps ``monai.data.partition_dataset`` (as MONAI's multi-GPU bundles do) so that a
    ``CacheDataset`` caches ``len(data) / world_size`` items per rank instead of all of them. The
    split is the same on every rank (its shuffle uses ``seed``, not the global random state, which
    differs per rank). Logs the rank's share at INFO.

    Args:
        data: the datalist (any sequence, e.g. of ``{"image": ..., "label": ...}`` dicts).
        shuffle: shuffle before splitting (training), with ``seed``.
        even_divisible: pad the parts to one length by repeating items (training: every rank then runs
            the same number of iterations, which DDP needs); otherwise parts differ by at most one.
        seed: seed of the shuffle, identical on every rank.
        name: what ``data`` is, for the log line and errors.

    Returns:
        a list: this rank's items.

    Raises:
        ValueError: fewer items than processes (a rank would get none).
    """
    import torch.distributed as dist

    seed = check_int(seed, "seed", 0)
    items = list(data)
    if not (dist.is_available() and dist.is_initialized()):
        return items
    rank, world = dist.get_rank(), dist.get_world_size()
    if len(items) < world:
        raise ValueError(f"{name} has {len(items)} items for {world} processes: every rank needs at least one.")
    part = partition_dataset(
        data=items, num_partitions=world, shuffle=shuffle, seed=seed, even_divisible=even_divisible
    )[rank]
    logger.info("rank %d of %d: %d of %d %s items: %s", rank, world, len(part), len(items), name, _names(part))
    return list(part)


def _names(items: Sequence[Any], limit: int = 8) -> str:
    """Short description of items for the log: file names of their ``"image"`` entries when present."""
    names = [Path(str(i["image"])).name if isinstance(i, dict) and "image" in i else repr(i) for i in items[:limit]]
    return ", ".join(names) + (", ..." if len(items) > limit else "")

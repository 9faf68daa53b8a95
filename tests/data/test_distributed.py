"""monai_shf.data.distributed: each rank's part of a datalist."""

from __future__ import annotations

import logging

import pytest
import torch.distributed as dist

from monai_shf.data import rank_partition


def _as_rank(monkeypatch, rank, world):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda: world)


def test_without_a_process_group_every_item():
    items = [{"image": f"{i}.png"} for i in range(5)]
    assert rank_partition(items, shuffle=True) == items


def test_ranks_get_disjoint_parts_of_one_split(monkeypatch, caplog):
    items = [{"image": f"{i}.png"} for i in range(7)]
    parts = []
    with caplog.at_level(logging.INFO, logger="monai_shf.data.distributed"):
        for rank in range(3):
            _as_rank(monkeypatch, rank, 3)
            parts.append(rank_partition(items, shuffle=True, seed=4, name="training"))
    names = [[i["image"] for i in p] for p in parts]
    assert sorted(sum(names, [])) == sorted(i["image"] for i in items) and [len(p) for p in parts] == [3, 2, 2]
    assert "rank 2 of 3: 2 of 7 training items" in caplog.text
    _as_rank(monkeypatch, 1, 3)
    padded = rank_partition(items, shuffle=True, even_divisible=True, seed=4)
    assert len(padded) == 3, "training parts are padded to one length (same step count on every rank)"
    with pytest.raises(ValueError, match="validation has 2 items for 3 processes"):
        rank_partition(items[:2], name="validation")

"""monai_shf.handlers: checkpoints a crash cannot truncate."""

from __future__ import annotations

import os

import pytest
import torch
from ignite.engine import Engine, Events

from monai_shf.handlers import AtomicCheckpointSaver, AtomicDiskSaver


def test_atomic_write_keeps_the_old_file_when_saving_crashes(tmp_path, monkeypatch):
    saver = AtomicDiskSaver(str(tmp_path), filename="latest.pt")
    saver({"w": torch.ones(3)}, "ignored.pt")
    assert torch.load(tmp_path / "latest.pt")["w"].sum() == 3

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        saver({"w": torch.zeros(3)}, "ignored.pt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "latest.pt")["w"].sum() == 3, "the previous checkpoint was damaged"
    assert os.listdir(tmp_path) == ["latest.pt"], "a temporary file was left behind"
    saver.remove("latest.pt")  # fixed name: replaced by the next save, never deleted first
    assert (tmp_path / "latest.pt").exists()
    assert oct(os.stat(tmp_path / "latest.pt").st_mode & 0o777) != oct(0o600)


def test_saver_keeps_latest_and_best_under_fixed_names(tmp_path):
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    latest = AtomicCheckpointSaver(
        str(tmp_path), {"model": net, "trainer": engine}, save_interval=1, n_saved=1, latest_filename="latest.pt"
    )
    latest.attach(engine)
    scores = iter([0.1, 0.5, 0.3])

    @engine.on(Events.EPOCH_COMPLETED)
    def _score(e):
        e.state.metrics["dice"] = next(scores)

    best = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="dice", key_metric_filename="best.pt"
    )
    best.attach(engine)
    engine.run([0], max_epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "latest.pt"]
    state = torch.load(tmp_path / "latest.pt")["trainer"]
    assert state["iteration"] == 3 and state["max_epochs"] == 3  # the trainer's progress, for resuming

"""monai_shf.handlers: checkpoints a crash cannot truncate, the forest picture in TensorBoard."""

from __future__ import annotations

import os

import numpy as np
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
    assert torch.load(tmp_path / "best.pt")["weight"].shape == (1, 2)  # one object: its state dict
    # the best-score tracking survives a restart: a worse score does not replace the old best
    tracking = best.state_dict()
    assert [priority for priority, _ in tracking["_saved"]] == [0.5]  # ignite Checkpoint.state_dict
    resumed = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="dice", key_metric_filename="best.pt"
    )
    resumed.load_state_dict(tracking)
    engine2 = Engine(lambda e, b: None)
    engine2.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(dice=0.4))
    resumed.attach(engine2)
    before = os.stat(tmp_path / "best.pt").st_mtime_ns
    engine2.run([0], max_epochs=1)
    assert os.stat(tmp_path / "best.pt").st_mtime_ns == before, "a worse score replaced the best checkpoint"


def test_saver_saves_the_final_checkpoint_and_reraises(tmp_path):
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: (_ for _ in ()).throw(RuntimeError("boom")) if e.state.iteration == 2 else None)
    AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_final=True, final_filename="final.pt").attach(engine)
    with pytest.raises(RuntimeError, match="boom"):
        engine.run([0, 1, 2], max_epochs=1)
    assert os.listdir(tmp_path) == ["final.pt"]
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(tmp_path / "numbered"), {"model": net}, save_final=True).attach(engine)
    engine.run([0, 1], max_epochs=2)
    assert os.listdir(tmp_path / "numbered") == ["model_final_iteration=4.pt"]


def test_saver_checks_its_arguments(tmp_path):
    net = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="save_dict"):
        AtomicCheckpointSaver(str(tmp_path), {})
    with pytest.raises(ValueError, match="key_metric_n_saved"):
        AtomicCheckpointSaver(
            str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="b.pt", key_metric_n_saved=2
        )
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True).attach(engine)
    with pytest.raises(ValueError, match="key_metric_name"):
        engine.run([0], max_epochs=1)


def _validation_engine(tmp_path, spatial_dims: int):
    """An evaluator-like ignite engine whose decollated batch/output look like the bundles' validation."""
    from monai_shf.handlers import TensorBoardForestImageHandler
    from monai_shf.transforms import HierarchicalPatchd

    shape = (32, 24) if spatial_dims == 2 else (16, 16, 8)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, *shape), dtype=np.float32))
    label = torch.zeros((1, *shape), dtype=torch.uint8)
    label[(0, slice(4, 12), slice(4, 12))] = 1
    patched = HierarchicalPatchd(["image"], length=16, patch_size=4, edge_method="slicewise")({"image": image})
    onehot = torch.cat([1 - label, label]).float()
    batch = [{"image": patched["image"], "label": patched["image"]}]
    output = [{"pred": onehot.flip(1), "reference_label": onehot}]
    engine = Engine(lambda e, b: output)
    handler = TensorBoardForestImageHandler(log_dir=str(tmp_path), global_iter_transform=lambda epoch: 10 * epoch)

    @engine.on(Events.ITERATION_STARTED)
    def _set_batch(e):
        e.state.batch = batch

    handler.attach(engine)
    return engine, handler


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forest_image_handler_logs_one_picture_per_round(tmp_path, spatial_dims):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    engine, handler = _validation_engine(tmp_path, spatial_dims)
    engine.run([0, 1, 2], max_epochs=2)  # 2 rounds of 3 iterations: one picture per round
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    pictures = events.Images("validation_forest")
    assert [p.step for p in pictures] == [10, 20]
    assert pictures[0].height > 0 and pictures[0].width == 3 * (320 + 4)  # three panels
    # the prediction panel is the flipped truth: the two panels differ, truth matches its label map
    from monai_shf.visualize import label_rgb

    batch, output = engine.state.batch[0], engine.state.output[0]
    rgb = handler.picture(batch, output)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    truth = label_rgb(output["reference_label"].argmax(0))
    assert truth[4:12, 4:12].any() and not truth[20:, 20:].any()


def test_forest_image_handler_closes_the_writer_it_created(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from monai_shf.handlers import TensorBoardForestImageHandler

    engine, handler = _validation_engine(tmp_path, 2)
    engine.run([0], max_epochs=1)
    assert handler.writer.all_writers is None, "the handler's own writer is still open after the run"
    engine.run([0], max_epochs=2)  # a later round (the next validation) reopens it and logs again
    assert handler.writer.all_writers is None
    own = SummaryWriter(log_dir=str(tmp_path / "own"))
    handler = TensorBoardForestImageHandler(summary_writer=own)
    handler.attach(engine)
    engine.run([0], max_epochs=3)
    assert own.all_writers is not None, "a writer passed in was closed by the handler"
    own.close()


def test_forest_image_handler_needs_the_patch_record(tmp_path):
    from monai_shf.handlers import TensorBoardForestImageHandler

    handler = TensorBoardForestImageHandler(log_dir=str(tmp_path))
    with pytest.raises(TypeError, match="applied_operations"):
        handler.picture({"image": torch.zeros(1, 16, 4, 4)}, {"pred": torch.zeros(2, 8, 8)})
    with pytest.raises(TypeError, match="dict samples"):
        handler._item([torch.zeros(1)])

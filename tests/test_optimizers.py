"""monai_shf.optimizers: the paper's warm-up + step schedule."""

from __future__ import annotations

import pytest
import torch

from monai_shf.optimizers import WarmupMultiStepLR, paper_schedule


def _lrs(scheduler, optimizer, epochs):
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_paper_schedule_at_800_epochs():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    lrs = _lrs(paper_schedule(opt, 800), opt, 800)
    assert lrs[0] == pytest.approx(1e-4 / 20) and lrs[19] == pytest.approx(1e-4)
    assert lrs[399] == pytest.approx(1e-4) and lrs[400] == pytest.approx(1e-5) and lrs[600] == pytest.approx(1e-6)


def test_scaled_schedule_and_state_round_trip():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupMultiStepLR(opt, warmup_epochs=2, milestones=[4, 6])
    assert _lrs(sched, opt, 8) == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = WarmupMultiStepLR(opt2, warmup_epochs=2, milestones=[4, 6])
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupMultiStepLR(opt, warmup_epochs=-1, milestones=[])


def test_resuming_with_a_new_epoch_count_follows_the_new_schedule():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    short = paper_schedule(opt, 2)
    _lrs(short, opt, 2)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    longer = paper_schedule(opt2, 40)
    longer.load_state_dict(short.state_dict())
    assert longer.last_epoch == 2 and longer.milestones == [20, 30]
    assert longer.factor(3) == 1.0

"""Learning-rate schedules: the paper's linear warm-up then step decay, scaled to any epoch count."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupMultiStepLR", "paper_schedule"]


class WarmupMultiStepLR(LambdaLR):
    """Linear warm-up over ``warmup_epochs`` (from ``lr / warmup_epochs``), then ``lr`` multiplied by
    ``gamma`` at each of ``milestones`` (epochs). Step it once per epoch."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: int,
        milestones: Sequence[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        self.warmup_epochs, self.milestones, self.gamma = (
            int(warmup_epochs),
            sorted(int(m) for m in milestones),
            float(gamma),
        )
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def state_dict(self) -> dict:
        """The progress only: warm-up, milestones and gamma come from the constructor, so a resumed
        run with a new ``max_epochs`` follows its own schedule."""
        state = super().state_dict()
        for key in ("warmup_epochs", "milestones", "gamma"):
            state.pop(key, None)
        return state

    def factor(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        return self.gamma ** sum(epoch >= m for m in self.milestones)


def paper_schedule(optimizer: Optimizer, max_epochs: int) -> WarmupMultiStepLR:
    """The paper's schedule (800 epochs: 20 warm-up, x0.1 at 400 and 600) scaled to ``max_epochs``."""
    return WarmupMultiStepLR(
        optimizer,
        warmup_epochs=max(1, round(max_epochs * 20 / 800)),
        milestones=[max(1, round(max_epochs * 400 / 800)), max(2, round(max_epochs * 600 / 800))],
    )

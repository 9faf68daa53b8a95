"""Transformer blocks: monai_shf's own ``Block`` vs MONAI's ``TransformerBlock`` (SHFViT's blocks before).

Same weights in both (MONAI's state dict loaded into ours, renamed on load), same input: a stack of
``DEPTH`` blocks of the 2D bundle's width on ``(B, L, hidden)`` tokens, with a padding key mask.
Columns: max |difference| of the outputs (eval), best wall time of forward + backward (train mode,
dropout 0), and the peak resident memory above the start of one forward + backward (process
high-water mark, CPU). "explicit" forms the ``(B, heads, L, L)`` attention weights; "fused" is
PyTorch's ``scaled_dot_product_attention``. Run: ``python benchmarks/network_blocks.py [L ...]``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

import torch
from monai.networks.blocks import TransformerBlock
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, peak_extra_bytes, table  # noqa: E402

from monai_shf.networks import Block  # noqa: E402

HIDDEN, MLP_DIM, HEADS, DEPTH, BATCH = 256, 512, 8, 2, 2
MB = 1 << 20


def _release_freed_memory() -> None:
    """Hand memory freed by earlier cases back to the kernel (glibc keeps it otherwise), so each peak
    is measured from a low resident level rather than hidden inside an earlier case's high-water mark."""
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)


def _stacks(fused: bool) -> tuple[nn.ModuleList, nn.ModuleList]:
    torch.manual_seed(0)
    theirs = nn.ModuleList(
        TransformerBlock(HIDDEN, MLP_DIM, HEADS, qkv_bias=True, use_flash_attention=fused) for _ in range(DEPTH)
    )
    ours = nn.ModuleList(Block(HIDDEN, HEADS, MLP_DIM, qkv_bias=True, fused=fused) for _ in range(DEPTH))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _run(stack: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor, monai_block: bool, fused: bool) -> torch.Tensor:
    for block in stack:
        if monai_block:  # MONAI's two mask conventions: (B, L) explicit, SDPA's (B, 1, 1, L) fused
            x = block(x, attn_mask=mask[:, None, None, :] if fused else mask)
        else:
            x = block(x, mask)
    return x


def main(lengths: list[int]) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for length in lengths:
        x = torch.randn(BATCH, length, HIDDEN)
        mask = torch.ones(BATCH, length, dtype=torch.bool)
        mask[1, length * 3 // 4 :] = False
        for fused in (False, True):
            theirs, ours = _stacks(fused)
            with torch.no_grad():
                diff = (
                    (_run(theirs.eval(), x, mask, True, fused) - _run(ours.eval(), x, mask, False, fused)).abs().max()
                )
            for name, stack, monai_block in (
                ("MONAI TransformerBlock", theirs, True),
                ("monai_shf Block", ours, False),
            ):
                stack.train()
                inputs = x.clone().requires_grad_(True)

                def step(stack=stack, inputs=inputs, mask=mask, monai_block=monai_block, fused=fused):
                    _run(stack, inputs, mask, monai_block, fused).square().mean().backward()

                step()  # warm-up outside the measurement
                _release_freed_memory()
                peak = peak_extra_bytes(step)
                seconds = best_time(step, repeat=3, warmup=0)
                rows.append(
                    {
                        "L": length,
                        "attention": "fused" if fused else "explicit",
                        "blocks": name,
                        "fwd+bwd ms": f"{seconds * 1e3:.0f}",
                        "peak MB": "n/a" if peak is None else f"{peak / MB:.0f}",
                        "max abs diff": f"{diff:.1e}",
                    }
                )
    print(table(rows, ["L", "attention", "blocks", "fwd+bwd ms", "peak MB", "max abs diff"]))
    print(
        f"\nhidden {HIDDEN}, mlp {MLP_DIM}, heads {HEADS}, depth {DEPTH}, batch {BATCH}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1024, 2048])

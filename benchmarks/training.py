"""Training step time and peak memory: SHFViT on L SHF tokens vs the same ViT on a uniform grid.

The grid baseline is the plain ViT patching of the same image: (H/p)^D tokens of p^D pixels (the
same SHFViT class on a uniform forest, i.e. a standard ViT patch embedding), same width, depth,
heads, loss and optimizer. Both use PyTorch's fused attention (memory linear in the token count),
so the ratio measures the token count, not an attention implementation.

Cases: 2D 512^2 and 1024^2 (p = 8, L = 1024; the real nuclei2d image colour-mapped, resized), and
3D 128^3 (p = 8, L = 512; MNI152 T1). One step = forward + TokenDiceCELoss + backward + AdamW step
at batch 1; token preparation (edges, forest, serialisation; done by DataLoader workers in training)
is timed separately. Run: ``python benchmarks/training.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2 as cv
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, mni152, nuclei2d, peak_extra_bytes, table  # noqa: E402

from monai_shf.forest import (  # noqa: E402
    build_forest,
    edge_map,
    serialize,
    to_uint8,  # noqa: E402
)
from monai_shf.losses import TokenDiceCELoss  # noqa: E402
from monai_shf.networks import SHFViT  # noqa: E402

VIT = dict(hidden_size=128, mlp_dim=256, num_layers=2, num_heads=4, use_flash_attention=True)
MB = 1 << 20


def _tokens(image: np.ndarray, label: np.ndarray, length: int, patch: int, grid: bool):
    """Tokens, soft-label tokens, geom and mask for one sample; a uniform forest when ``grid``."""
    shape = image.shape[1:]
    if grid:
        score = np.zeros(shape, bool)
        length = int(np.prod([s // patch for s in shape]))
        forest = build_forest(score, length, min_size=patch)
    else:
        forest = build_forest(edge_map(image, 3, (50, 100), method="slicewise"), length)
    x = serialize(image.astype(np.float32), forest, patch)
    y = serialize(label, forest, patch, mode="fraction", num_classes=2)
    return (
        forest,
        torch.from_numpy(x)[None],
        torch.from_numpy(y)[None],
        torch.from_numpy(forest.geom())[None],
        torch.from_numpy(forest.token_mask())[None],
    )


def _step_fn(net: SHFViT, batch):
    _, x, y, geom, mask = batch
    loss_fn = TokenDiceCELoss()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x, geom, mask), y, token_mask=mask)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _measure(
    image: np.ndarray, label: np.ndarray, length: int, patch: int, grid: bool
) -> tuple[int, float, float, int | None]:
    """In a fresh process: tokens, then the peak memory of the first step (activations, gradients,
    optimizer state all new), then the best step time."""
    t = time.perf_counter()
    batch = _tokens(image, label, length, patch, grid)
    prep = time.perf_counter() - t
    n_tokens = batch[1].shape[2]
    torch.manual_seed(0)
    net = SHFViT(image.shape[0], 2, patch, n_tokens, spatial_dims=image.ndim - 1, **VIT)
    step = _step_fn(net, batch)
    extra = peak_extra_bytes(step)
    return n_tokens, prep, best_time(step, repeat=2, warmup=0), extra


def case(name: str, image: np.ndarray, label: np.ndarray, length: int, patch: int) -> list[dict]:
    import multiprocessing as mp

    rows = {}
    for kind, grid in (("SHF", False), ("grid", True)):
        with mp.get_context("spawn").Pool(1) as pool:  # a clean heap: peak memory is this run's own
            n_tokens, prep, seconds, extra = pool.apply(_measure, (image, label, length, patch, grid))
        rows[kind] = {
            "case": name,
            "tokens": f"{kind} {n_tokens}",
            "step ms": f"{1e3 * seconds:.0f}",
            "peak extra MB": "" if extra is None else f"{extra / MB:.0f}",
            "token prep ms": f"{1e3 * prep:.0f}",
            "_s": seconds,
            "_m": extra,
        }
        print(f"done {name} {kind}", file=sys.stderr, flush=True)
    shf, grid = rows["SHF"], rows["grid"]
    ratio = {
        "case": name,
        "tokens": "grid / SHF",
        "step ms": f"{grid['_s'] / shf['_s']:.1f}x",
        "peak extra MB": "" if not (shf["_m"] and grid["_m"]) else f"{grid['_m'] / shf['_m']:.1f}x",
        "token prep ms": "",
    }
    return [shf, grid, ratio]


def main() -> None:
    img, mask = nuclei2d()
    rgb = np.moveaxis(cv.applyColorMap(to_uint8(img), cv.COLORMAP_VIRIDIS), -1, 0).astype(np.float32) / 255
    rows = []
    for side in (512, 1024):
        image = np.stack([cv.resize(c, (side, side), interpolation=cv.INTER_LINEAR) for c in rgb])
        label = cv.resize((mask > 0).astype(np.uint8), (side, side), interpolation=cv.INTER_NEAREST)[None]
        rows += case(f"2D {side}^2, p=8, L=1024", image, label, 1024, 8)
    t1, gm = mni152()
    vol = torch.nn.functional.interpolate(torch.from_numpy(t1)[None, None], size=(128,) * 3, mode="trilinear")[
        0
    ].numpy()
    lab = (
        torch.nn.functional.interpolate(
            torch.from_numpy((gm > 127).astype(np.float32))[None, None], size=(128,) * 3, mode="nearest"
        )[0]
        .numpy()
        .astype(np.uint8)
    )
    rows += case("3D 128^3, p=8, L=512", vol / vol.max(), lab, 512, 8)
    print(table(rows, ["case", "tokens", "step ms", "peak extra MB", "token prep ms"]))
    print(f"\nViT: {VIT}; batch 1; torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()

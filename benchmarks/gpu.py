"""The GPU path of the forest vs the CPU path on the same machine, against the memory-bandwidth floor.

For a batch of 2D 8192^2 RGB uint8 images (the real nuclei image colour-mapped and resized) and of 3D
512^3 float32 volumes (the real MNI152 T1, resized), each step of SHF patching and training:

* ``edges``: soft edge maps (CPU: ``soft_edge_map`` per sample, OpenCV; GPU: ``soft_edge_maps`` on the batch);
* ``build``: the forests from those maps (CPU: ``build_forest`` per sample, numpy; GPU: ``build_forests``);
* ``serialize``: image tokens (``serialize(mode="area")`` per sample, numpy/OpenCV vs torch on the device);
* ``argmax deserialize``: ``K = 2`` logits tokens back to full-resolution class indices (``argmax=True``);
* ``train step``: the bundle's SHFViT (fused attention) forward + TokenDiceCELoss + backward + AdamW on the
  batch (CPU: float32, as train.yaml on a CPU; GPU: bfloat16 autocast, as train_gpu.yaml).

Each time is also given as a multiple of the *bandwidth floor*: the time to read the step's data once
(the larger of its input and output, e.g. the image for edges, the full-resolution canvas for
deserialize) at the device's measured read bandwidth (a float32 ``sum`` over 1 GiB). When CUDA is not
available the GPU column says "not measured". ``--small`` (1024^2, 128^3, L/4) is a quick check; there,
without CUDA, the torch path also runs on the CPU so that every line of the script is exercised.

Run: ``python benchmarks/gpu.py [--small] [--batch B] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2 as cv
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import mni152, nuclei2d, table  # noqa: E402

from monai_shf.forest import (  # noqa: E402
    ForestSpec,
    build_forest,
    build_forests,
    deserialize,
    serialize,
    soft_edge_map,
    soft_edge_maps,
    to_uint8,
)
from monai_shf.losses import TokenDiceCELoss  # noqa: E402
from monai_shf.networks import SHFViT  # noqa: E402

# the bundles' network (train.yaml) and forests (2D: p = 8; 3D: p = 4, L = 2048)
NET = dict(hidden_size=256, mlp_dim=512, num_layers=6, num_heads=8, use_flash_attention=True)
CASES = {"2D": dict(side=8192, length=4096, patch=8), "3D": dict(side=512, length=2048, patch=4)}
SMALL = {"2D": dict(side=1024, length=1024, patch=8), "3D": dict(side=128, length=512, patch=4)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Best wall time (s) of ``fn`` over ``repeat`` runs after one warm-up (kernels compiled, caches filled)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def read_bandwidth(device: torch.device) -> float:
    """Bytes per second of reading a 1 GiB float32 tensor once (``sum``)."""
    x = torch.ones(1 << 28, dtype=torch.float32, device=device)
    seconds = timed(lambda: x.sum(), device, 3)
    return x.numel() * 4 / seconds


def make_inputs(kind: str, side: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(B, C, *spatial)`` images and ``(B, 1, *spatial)`` uint8 labels from the real data."""
    if kind == "2D":
        img, mask = nuclei2d()
        rgb = cv.applyColorMap(to_uint8(img), cv.COLORMAP_VIRIDIS)
        image = np.moveaxis(cv.resize(rgb, (side, side), interpolation=cv.INTER_LINEAR), -1, 0)
        label = cv.resize((mask > 0).astype(np.uint8), (side, side), interpolation=cv.INTER_NEAREST)[None]
    else:
        t1, gm = mni152()
        size = (side,) * 3
        image = torch.nn.functional.interpolate(torch.from_numpy(t1)[None, None], size=size, mode="trilinear")[0]
        image = image.numpy()
        gm_t = torch.from_numpy((gm > 127).astype(np.uint8))[None, None]
        label = torch.nn.functional.interpolate(gm_t, size=size, mode="nearest")[0].numpy()
    # samples of one batch differ (flipped), like augmented samples of one shape
    images = np.stack([image if b % 2 == 0 else np.ascontiguousarray(image[:, ::-1]) for b in range(batch)])
    labels = np.stack([label if b % 2 == 0 else np.ascontiguousarray(label[:, ::-1]) for b in range(batch)])
    return images, labels


def train_step(images: torch.Tensor, labels: torch.Tensor, forests: list, spec: ForestSpec, bf16: bool):
    """A closure running one training step on tokens of ``images`` (made once, outside the timing)."""
    device = images.device
    x = torch.stack([serialize(i, f, spec.patch_size) for i, f in zip(images, forests)]).float()
    y = torch.stack(
        [serialize(lb, f, spec.patch_size, mode="fraction", num_classes=2) for lb, f in zip(labels, forests)]
    )
    geom = torch.stack([torch.from_numpy(f.geom()) for f in forests]).to(device)
    mask = torch.stack([torch.from_numpy(f.token_mask()) for f in forests]).to(device)
    x = x / max(float(x.max()), 1e-6)
    torch.manual_seed(0)
    net = SHFViT(x.shape[1], 2, spec.patch_size, spec.length, spatial_dims=images.ndim - 2, **NET).to(device)
    loss_fn = TokenDiceCELoss()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x, geom, mask), y, token_mask=mask)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, x.numel() * x.element_size()


def cpu_path(images: np.ndarray, labels: np.ndarray, spec: ForestSpec, repeat: int) -> dict[str, tuple[float, int]]:
    """``{step: (seconds per batch, bytes touched once)}`` of the numpy/OpenCV path, sample by sample."""
    cpu = torch.device("cpu")
    out = {}
    edges: list[np.ndarray] = []
    out["edges"] = (
        timed(lambda: edges.__setitem__(slice(None), [soft_edge_map(i) for i in images]), cpu, repeat),
        images.nbytes,
    )
    forests: list = []
    out["build"] = (
        timed(lambda: forests.__setitem__(slice(None), [build_forest(e, spec) for e in edges]), cpu, repeat),
        sum(e.nbytes for e in edges),
    )
    tokens = [serialize(i, f, spec.patch_size) for i, f in zip(images, forests)]
    out["serialize"] = (
        timed(lambda: [serialize(i, f, spec.patch_size) for i, f in zip(images, forests)], cpu, repeat),
        images.nbytes,
    )
    logits = [np.random.default_rng(0).standard_normal((2, *t.shape[1:]), dtype=np.float32) for t in tokens]
    canvas = labels.nbytes  # the uint8 class-index output
    out["argmax deserialize"] = (
        timed(lambda: [deserialize(z, f, argmax=True) for z, f in zip(logits, forests)], cpu, repeat),
        max(canvas, sum(z.nbytes for z in logits)),
    )
    step, token_bytes = train_step(torch.from_numpy(images), torch.from_numpy(labels), forests, spec, bf16=False)
    out["train step"] = (timed(step, cpu, max(1, repeat - 1)), token_bytes)
    return out


def torch_path(
    images: np.ndarray, labels: np.ndarray, spec: ForestSpec, device: torch.device, repeat: int
) -> dict[str, tuple[float, int]]:
    """The same steps with the batch on ``device``: torch soft edges and build, torch (de)serialisation."""
    x, lb = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
    out = {}
    holder: dict[str, Any] = {}
    out["edges"] = (
        timed(lambda: holder.__setitem__("edges", soft_edge_maps(x)), device, repeat),
        x.numel() * x.element_size(),
    )
    edges = holder["edges"]
    out["build"] = (
        timed(lambda: holder.__setitem__("forests", build_forests(edges, spec)), device, repeat),
        edges.numel(),
    )
    forests = holder["forests"]
    out["serialize"] = (
        timed(lambda: [serialize(i, f, spec.patch_size) for i, f in zip(x, forests)], device, repeat),
        x.numel() * x.element_size(),
    )
    shapes = [(2, spec.length, *((spec.patch_size,) * (x.ndim - 2))) for _ in forests]
    logits = [torch.randn(s, device=device) for s in shapes]
    canvas = lb.numel()
    out["argmax deserialize"] = (
        timed(lambda: [deserialize(z, f, argmax=True) for z, f in zip(logits, forests)], device, repeat),
        max(canvas, sum(z.numel() * 4 for z in logits)),
    )
    step, token_bytes = train_step(x, lb, forests, spec, bf16=device.type == "cuda")
    out["train step"] = (timed(step, device, max(1, repeat - 1)), token_bytes)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="1024^2 and 128^3 images: a quick CPU check")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (default 2)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per step, best kept (default 2)")
    parser.add_argument("--cases", nargs="+", default=["2D", "3D"], choices=["2D", "3D"])
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    gpu = torch.device("cuda:0") if cuda else None
    torch_device = gpu if cuda else (torch.device("cpu") if args.small else None)
    cpu_bw = read_bandwidth(torch.device("cpu"))
    gpu_bw = read_bandwidth(gpu) if gpu is not None else None
    rows = []
    for kind in args.cases:
        case = (SMALL if args.small else CASES)[kind]
        spec = ForestSpec.create(case["length"], patch_size=case["patch"])
        images, labels = make_inputs(kind, case["side"], args.batch)
        name = f"{kind} {args.batch} x {case['side']}^{2 if kind == '2D' else 3}, L={spec.length}, p={spec.patch_size}"
        cpu = cpu_path(images, labels, spec, args.repeat)
        print(f"done {name}: CPU path", file=sys.stderr, flush=True)
        dev = torch_path(images, labels, spec, torch_device, args.repeat) if torch_device is not None else None
        for step, (seconds, nbytes) in cpu.items():
            row = {
                "case": name,
                "step": step,
                "CPU path ms": f"{1e3 * seconds:.0f}",
                "CPU / floor": f"{seconds / (nbytes / cpu_bw):.0f}x",
            }
            if dev is not None and cuda:
                g, gbytes = dev[step]
                row.update(
                    {
                        "GPU ms": f"{1e3 * g:.1f}",
                        "CPU / GPU": f"{seconds / g:.1f}x",
                        "GPU / floor": f"{g / (gbytes / gpu_bw):.1f}x",
                    }
                )
            else:
                row.update({"GPU ms": "not measured", "CPU / GPU": "not measured", "GPU / floor": "not measured"})
                if dev is not None:
                    row["torch path on CPU ms"] = f"{1e3 * dev[step][0]:.0f}"
            rows.append(row)
    columns = ["case", "step", "CPU path ms", "GPU ms", "CPU / GPU", "CPU / floor", "GPU / floor"]
    if torch_device is not None and not cuda:
        columns.append("torch path on CPU ms")
    print(table(rows, columns))
    print(
        f"\nCPU: {torch.get_num_threads()} threads, read bandwidth {cpu_bw / 1e9:.1f} GB/s; "
        + (
            f"GPU: {torch.cuda.get_device_name(gpu)}, read bandwidth {gpu_bw / 1e9:.0f} GB/s"
            if cuda
            else "GPU: none (CUDA unavailable)"
        )
        + f"; torch {torch.__version__}; network {NET}"
    )


if __name__ == "__main__":
    main()

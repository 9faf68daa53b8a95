"""``monai-shf`` command line: a table of commands, each a parser setup and a thin runner.

The work is done by library functions (:mod:`monai_shf.apps`, :mod:`monai_shf.inference`,
:mod:`monai_shf.slide`, :mod:`monai_shf.data`, :mod:`monai_shf.bundles`); this module only parses
arguments, calls them and prints their results.

Commands that take ``--bundle`` run that bundle's configs, and bundles are code: their ``$``
expressions and ``_target_`` entries run as Python. Run only bundles you trust.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monai_shf.utils import terminate_as_exit

__all__ = ["COMMANDS", "Command", "main"]

BUNDLE_IS_CODE = "bundles are code (their $ expressions run as Python): use only bundles you trust"


@dataclass(frozen=True)
class Command:
    """One ``monai-shf`` command: its name, one-line help, argument setup and runner (returns the exit code)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _override(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE (e.g. network_def#hidden_size=128), got {text!r}")
    key, value = text.split("=", 1)
    return key, yaml.safe_load(value)


# ---------------------------------------------------------------------------------------------
# demo, patch-demo


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, default=Path("outputs/demo"))
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--num-train", type=int, default=8)
    p.add_argument("--image-size", type=int, default=1024)


def _demo(args: argparse.Namespace) -> int:
    from monai_shf.apps import training_demo

    r = training_demo(args.output_dir, args.max_epochs, args.num_train, args.image_size)
    m = r["metrics"]
    size = f"{args.image_size}x{args.image_size}"
    print(f"trained the 2D bundle for {args.max_epochs} epochs on {args.num_train} generated {size} images")
    print(f"  in {r['train_seconds']:.0f} s")
    print(f"full-resolution Dice after depatching (validation): {m['val_mean_dice']:.4f}")
    print(f"token-space Dice: {m['val_token_dice']:.4f}")
    print(f"figure      {r['figure']}")
    print(f"prediction  {r['pred_path']}")
    return 0


def _patch_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, default=Path("outputs/patch_demo"))
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--thresholds", type=float, nargs=2, default=(50.0, 100.0))
    p.add_argument("--edge-kind", choices=("soft", "canny"), default="soft", help="canny: the paper's edges")
    p.add_argument("--criterion", choices=("error", "edges"), default="error", help="edges: the paper's order")


def _patch_demo(args: argparse.Namespace) -> int:
    from monai_shf.apps import patching_demo

    r = patching_demo(
        args.output_dir,
        args.length,
        args.patch_size,
        args.kernel_size,
        tuple(args.thresholds),
        args.edge_kind,
        args.criterion,
    )
    print(f"data        {r['source']}")
    print(f"tokens      {r['token_shape']}  (L={r['length']}, {r['leaves']} leaves, {r['padding']} padding)")
    print(f"leaf sides  {r['leaf_sides']} px")
    print(f"compression {r['compression']:.2f} image pixels per token pixel")
    print(
        f"timing      edges {r['ms_edges']:.1f} ms, build {r['ms_build']:.1f} ms, "
        f"serialize {r['ms_serialize']:.1f} ms, deserialize {r['ms_deserialize']:.1f} ms"
    )
    print(
        f"depatch Dice of a perfect prediction: {r['dice_soft_linear']:.4f} (soft tokens, linear), "
        f"{r['dice_hard_nearest']:.4f} (hard tokens, nearest)"
    )
    print(f"figure      {r['figure']}")
    return 0


# ---------------------------------------------------------------------------------------------
# datalist, make-slide


def _datalist_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path)
    p.add_argument(
        "--layout",
        choices=("msd", "paired", "dicom"),
        default="msd",
        help="msd: imagesTr/labelsTr (BTCV, KiTS); paired: image + mask files (PAIP); "
        "dicom: one item per DICOM image series folder (testing list, for inference)",
    )
    p.add_argument("--output", type=Path, default=None, help="default: <root>/datalist.json")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--label-suffix", default="_mask")
    p.add_argument("--image-suffix", default="")


def _datalist(args: argparse.Namespace) -> int:
    from monai_shf.data import make_datalist

    out = args.output or args.root / "datalist.json"
    made = make_datalist(args.root, args.layout, out, args.val_fraction, args.image_suffix, args.label_suffix)
    if made.get("testing"):
        print(f"{out}: {len(made['testing'])} testing cases (DICOM series)")
    else:
        print(f"{out}: {len(made['training'])} training, {len(made['validation'])} validation cases")
    return 0


def _make_slide_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="the slide .tif (JPEG tiles)")
    p.add_argument("--size", type=int, nargs="+", required=True, help="level-0 side N, or H W")
    p.add_argument("--label-out", type=Path, default=None, help="default: <out stem>_label.tif")
    p.add_argument("--no-label", action="store_true", help="write the slide only")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mpp", type=float, default=0.25, help="microns per pixel at level 0")


def _make_slide(args: argparse.Namespace) -> int:
    from monai_shf.data import make_slide
    from monai_shf.utils import peak_rss_bytes

    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    start = time.perf_counter()
    label_out = False if args.no_label else args.label_out
    slide, label = make_slide(args.out, size, tile=args.tile, seed=args.seed, label_out=label_out, mpp=args.mpp)
    seconds = time.perf_counter() - start
    print(f"slide  {slide}  ({slide.stat().st_size / 1e6:.1f} MB)")
    if label is not None:
        print(f"label  {label}  ({label.stat().st_size / 1e6:.1f} MB)")
    print(f"time   {seconds:.1f} s, peak memory {peak_rss_bytes() / 2**30:.2f} GiB")
    return 0


def _make_volume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="the OME-Zarr image store (a folder, e.g. brain.zarr)")
    p.add_argument("--size", type=int, nargs="+", required=True, help="level-0 side N, or D H W")
    p.add_argument("--label-out", type=Path, default=None, help="default: <out stem>_label.zarr")
    p.add_argument("--no-label", action="store_true", help="write the image only")
    p.add_argument("--tile", type=int, default=256, help="longest side of one copy of the brain, in voxels")
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--dtype", choices=("uint16", "float32"), default="uint16")
    p.add_argument("--data-root", type=Path, default=None, help="real-data root (default: $MONAI_SHF_DATA)")


def _make_volume(args: argparse.Namespace) -> int:
    from monai_shf.data import make_volume
    from monai_shf.utils import peak_rss_bytes

    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    start = time.perf_counter()
    label_out = False if args.no_label else args.label_out
    image, label = make_volume(
        args.out, size, tile=args.tile, chunk=args.chunk, label_out=label_out, dtype=args.dtype, root=args.data_root
    )
    seconds = time.perf_counter() - start
    print(f"volume {image}")
    if label is not None:
        print(f"label  {label}")
    print(f"time   {seconds:.1f} s, peak memory {peak_rss_bytes() / 2**30:.2f} GiB")
    return 0


# ---------------------------------------------------------------------------------------------
# figure, segment-slide


def _figure_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path)
    p.add_argument("label", type=Path)
    p.add_argument("--checkpoint", type=Path, default=None, help="bundle weights (e.g. models/best.pt)")
    p.add_argument(
        "--bundle", type=Path, default=None, help=f"bundle folder (default: the 2D bundle); {BUNDLE_IS_CODE}"
    )
    p.add_argument("--binarize", action="store_true", help="foreground = label > 0 (instance masks)")
    p.add_argument("--set", dest="overrides", type=_override, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")


def _figure(args: argparse.Namespace) -> int:
    from monai_shf.apps import shf_figure

    r = shf_figure(args.image, args.label, args.out, args.bundle, args.checkpoint, args.binarize, dict(args.overrides))
    print(f"figure      {r['figure']}  ({r['leaves']} leaves)")
    print(f"upper bound Dice (depatched label tokens): {r['upper_bound_dice']:.4f}")
    if r["dice"] is not None:
        print(f"prediction Dice (depatched): {r['dice']:.4f}")
    return 0


def _segment_slide_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("slide", type=Path, help="the slide (SVS, tiled TIFF, OME-TIFF, ...)")
    p.add_argument("--out", type=Path, required=True, help="the mask .tif (its folder must exist)")
    p.add_argument(
        "--bundle",
        default=None,
        help=f"bundle folder or shipped name (default: shf_wsi_segmentation); {BUNDLE_IS_CODE}",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="default: <bundle>/models/best.pt|latest.pt")
    p.add_argument("--length", type=int, default=None, help="tokens L (default: the bundle's)")
    p.add_argument("--patch-size", type=int, default=None, help="token side p (default: the bundle's)")
    p.add_argument("--max-side", type=int, default=None, help="longest side of the forest level")
    p.add_argument("--probabilities", action="store_true", help="write uint8 softmax probabilities")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--untrained", action="store_true", help="random weights (timing and smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--geojson", type=Path, default=None, help="also write the mask as QuPath annotations (.geojson)")


def _segment_slide(args: argparse.Namespace) -> int:
    from monai_shf.inference import SEGMENT_STAGES, segment_slide

    r = segment_slide(
        args.slide,
        args.out,
        bundle=args.bundle,
        checkpoint=args.checkpoint,
        length=args.length,
        patch_size=args.patch_size,
        max_side=args.max_side,
        probabilities=args.probabilities,
        device=args.device,
        untrained=args.untrained,
        progress=not args.no_progress,
        geojson=args.geojson,
    )
    h, w = r["shape"]
    weights = r["checkpoint"] or "none (--untrained: random weights)"
    print(f"slide   {args.slide}  ({h} x {w})")
    print(f"network {r['bundle']}; weights {weights}")
    print(f"leaves  {r['leaves']} of L={r['length']} tokens, p={r['patch_size']}, {r['num_classes']} classes")
    stages = ", ".join(f"{name} {r['seconds'][name]:.2f} s" for name in SEGMENT_STAGES)
    print(f"time    {r['total_seconds']:.2f} s ({stages})")
    print(f"memory  peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB")
    print(f"mask    {r['out']}")
    if "geojson" in r:
        print(f"geojson {_geojson_line(r['geojson'])}")
    return 0


# ---------------------------------------------------------------------------------------------
# mask-to-geojson


def _geojson_line(r: dict) -> str:
    counts = ", ".join(f"{name} {n}" for name, n in r["features"].items())
    return f"{r['path']}  ({counts} polygons; {r['seconds']:.1f} s)"


def _classes_argument(text: str) -> dict[int, str]:
    """``--classes``: ``name0,name1,...`` (labels 0, 1, ...) or ``1=tumour,2=stroma``."""
    out: dict[int, str] = {}
    for i, item in enumerate(part.strip() for part in text.split(",")):
        value, _, name = item.partition("=") if "=" in item else (str(i), "", item)
        if not value.strip().isdigit() or not name.strip():
            raise argparse.ArgumentTypeError(f"expected name0,name1,... or 1=name,2=name, got {text!r}")
        out[int(value)] = name.strip()
    return out


def _mask_to_geojson_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mask", type=Path, help="the pyramidal label mask .tif (uint8 classes)")
    p.add_argument("out", type=Path, help="the .geojson to write (its folder must exist)")
    p.add_argument("--level", type=int, default=0, help="pyramid level traced (default 0)")
    p.add_argument("--min-area", type=float, default=0.0, help="drop polygons below this area (level-0 px^2)")
    p.add_argument("--simplify", type=float, default=0.0, help="simplification tolerance (level-0 px)")
    p.add_argument(
        "--classes",
        type=_classes_argument,
        default=None,
        help="name0,name1,... for labels 0,1,... (0: background) or 1=name,2=name; default: names in the mask",
    )


def _mask_to_geojson(args: argparse.Namespace) -> int:
    from monai_shf.slide import mask_to_geojson

    r = mask_to_geojson(
        args.mask, args.out, level=args.level, classes=args.classes, min_area=args.min_area, simplify=args.simplify
    )
    print(f"geojson {_geojson_line(r)}")
    return 0


def _segment_volume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("volume", type=Path, help="the multiscale OME-Zarr image store")
    p.add_argument("--out", type=Path, required=True, help="the mask store, e.g. mask.zarr (its folder must exist)")
    p.add_argument(
        "--bundle",
        default=None,
        help=f"bundle folder or shipped name (default: shf_3d_segmentation); {BUNDLE_IS_CODE}",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="default: <bundle>/models/best.pt|latest.pt")
    p.add_argument("--length", type=int, default=None, help="tokens L (default: the bundle's)")
    p.add_argument("--patch-size", type=int, default=None, help="token side p (default: the bundle's)")
    p.add_argument("--max-side", type=int, default=None, help="longest side of the forest level (default 256)")
    p.add_argument(
        "--intensity-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"), help="scaled to [0, 1]"
    )
    p.add_argument("--set", dest="overrides", type=_override, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--untrained", action="store_true", help="random weights (timing and smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _segment_volume(args: argparse.Namespace) -> int:
    from monai_shf.apps.volume import segment_volume
    from monai_shf.inference import SEGMENT_STAGES

    r = segment_volume(
        args.volume,
        args.out,
        bundle=args.bundle,
        checkpoint=args.checkpoint,
        length=args.length,
        patch_size=args.patch_size,
        max_side=args.max_side,
        intensity_range=None if args.intensity_range is None else tuple(args.intensity_range),
        device=args.device,
        untrained=args.untrained,
        overrides=dict(args.overrides),
        progress=not args.no_progress,
    )
    d, h, w = r["shape"]
    weights = r["checkpoint"] or "none (--untrained: random weights)"
    print(f"volume  {args.volume}  ({d} x {h} x {w}), forest level {r['forest_level']}")
    print(f"network {r['bundle']}; weights {weights}")
    print(f"leaves  {r['leaves']} of L={r['length']} tokens, p={r['patch_size']}, {r['num_classes']} classes")
    stages = ", ".join(f"{name} {r['seconds'][name]:.2f} s" for name in SEGMENT_STAGES)
    print(f"time    {r['total_seconds']:.2f} s ({stages})")
    print(f"memory  peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB")
    print(f"mask    {r['out']}")
    return 0


# ---------------------------------------------------------------------------------------------
# bundle list / export


def _bundle_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the shipped bundles")
    export = actions.add_parser("export", help="copy a shipped bundle to a folder to edit and run")
    export.add_argument("name", help="a name from `monai-shf bundle list`")
    export.add_argument("dest", type=Path, help="the new bundle folder")


def _bundle(args: argparse.Namespace) -> int:
    from monai_shf.bundles import bundle_path, export_bundle, list_bundles

    if args.action == "list":
        for name in list_bundles():
            print(f"{name}  {bundle_path(name)}")
        return 0
    dest = export_bundle(args.name, args.dest)
    print(f"exported {args.name} to {dest}")
    print(f"run it:  python -m monai.bundle run --config_file {dest}/configs/train.yaml --bundle_root {dest}")
    print(f"note:    {BUNDLE_IS_CODE}")
    return 0


COMMANDS: tuple[Command, ...] = (
    Command(
        "demo", "train, evaluate and run the 2D bundle on its generated data (a minute on CPU)", _demo_arguments, _demo
    ),
    Command("patch-demo", "patch a real image and report depatching fidelity", _patch_demo_arguments, _patch_demo),
    Command("datalist", "write a MONAI datalist JSON for a folder layout", _datalist_arguments, _datalist),
    Command(
        "make-slide", "write a generated pyramidal test slide and its label slide", _make_slide_arguments, _make_slide
    ),
    Command(
        "make-volume",
        "write a generated multiscale OME-Zarr volume (real MNI152 anatomy) and its label",
        _make_volume_arguments,
        _make_volume,
    ),
    Command("figure", "the paper's Figure 1 (forest, tokens, reconstruction, prediction)", _figure_arguments, _figure),
    Command(
        "segment-slide",
        "segment a whole slide into a pyramidal mask (a bundle's SHF ViT, tile by tile)",
        _segment_slide_arguments,
        _segment_slide,
    ),
    Command(
        "mask-to-geojson",
        "a pyramidal label mask as QuPath GeoJSON annotations (needs monai_shf[annotations])",
        _mask_to_geojson_arguments,
        _mask_to_geojson,
    ),
    Command(
        "segment-volume",
        "segment a multiscale OME-Zarr volume into an NGFF label image (the 3D bundle's SHF ViT, chunk by chunk)",
        _segment_volume_arguments,
        _segment_volume,
    ),
    Command("bundle", "list the shipped MONAI bundles or export one to a folder", _bundle_arguments, _bundle),
)
"""The ``monai-shf`` commands, in ``--help`` order."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="monai-shf", description="Symmetrical Hierarchical Forest patching for MONAI."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.name, help=command.help, description=command.help))
    args = parser.parse_args(argv)
    run = next(c.run for c in COMMANDS if c.name == args.command)
    try:
        # SIGTERM (SLURM, Kubernetes preemption) exits through the writers' cleanup: no temporary is left
        with terminate_as_exit():
            return run(args)
    except (ValueError, TypeError, ImportError) as error:  # bad input, a missing extra: one line, no traceback
        print(f"monai-shf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The MONAI bundles that ship with monai_shf, as package data in MONAI model-zoo layout.

Each bundle is a folder ``<name>/`` holding ``configs/`` (``metadata.json``, ``train.yaml``,
``evaluate.yaml``, ``inference.yaml``, the ``multi_gpu_*.yaml`` overlays, ``logging.conf``), ``docs/``
and ``LICENSE``. The configs set ``bundle_root: .`` as MONAI's model-zoo bundles do: the runner sets it
(``python -m monai.bundle run ... --bundle_root DIR``, or run from the bundle folder), so models, data and
outputs land in the user's folder, never in the installed package. To edit and run a bundle, export a
copy::

    monai-shf bundle export shf_2d_segmentation my_bundle
    python -m monai.bundle run --config_file my_bundle/configs/train.yaml --bundle_root my_bundle

Bundles are code: their ``$`` expressions and ``_target_`` entries run as Python. Run only bundles you trust.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_FILES", "list_bundles", "bundle_path", "export_bundle", "apply_overrides"]

BUNDLE_FILES = ("configs/metadata.json", "configs/inference.yaml", "LICENSE")
"""Files every shipped bundle has (what makes a folder of this package a bundle)."""

# what a bundle folder may hold after a run from inside a clone: never exported
_RUN_OUTPUTS = ("models", "data", "eval", "runs", "__pycache__")


def _root() -> Path:
    return Path(os.fspath(resources.files(__name__)))


def list_bundles() -> list[str]:
    """Names of the shipped bundles, sorted (``["shf_2d_segmentation", ...]``)."""
    root = _root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and all((p / f).is_file() for f in BUNDLE_FILES))


def bundle_path(name: str) -> Path:
    """The installed folder of the shipped bundle ``name`` (read it; export it to edit or train).

    Raises:
        ValueError: ``name`` is not a shipped bundle (the message lists them).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a bundle name (str), got {type(name).__name__}.")
    names = list_bundles()
    if name not in names:
        raise ValueError(f"no bundle named {name!r}; the shipped bundles are {names}.")
    return _root() / name


def export_bundle(name: str, dest: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy the shipped bundle ``name`` to the new folder ``dest`` (configs, docs, LICENSE; no run outputs).

    The copy is made under a temporary name beside ``dest`` and renamed, so ``dest`` is either the whole
    bundle or absent. Returns ``dest`` as a ``Path``.

    Raises:
        ValueError: unknown ``name``; ``dest`` exists (unless ``overwrite``) or its parent folder does not.
    """
    source = bundle_path(name)
    if not isinstance(dest, (str, os.PathLike)):
        raise TypeError(f"dest must be a folder path, got {type(dest).__name__}.")
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise ValueError(f"dest {os.fspath(dest)!r} exists; choose a new folder (or overwrite=True).")
    if not dest.resolve().parent.is_dir():
        raise ValueError(f"the parent folder of dest {os.fspath(dest)!r} does not exist.")
    tmp = dest.resolve().parent / f".{dest.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(*_RUN_OUTPUTS, "__init__.py", "*.pyc"))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def apply_overrides(parser: Any, overrides: Mapping[str, Any] | None, config: str | os.PathLike = "the config") -> Any:
    """Set config ``overrides`` (ids such as ``"network_def#hidden_size"`` or ``"forest#length"``) on a
    ``monai.bundle.ConfigParser``; returns it.

    An id the config lacks is a ``ValueError`` naming it and ``config`` (a misspelled override is never
    silently added as a new, unused entry); under ``forest`` any option of
    :class:`~monai_shf.forest.ForestSpec` may be set, and an unknown or invalid one fails here.
    """
    from monai_shf.forest import ForestSpec

    for key, value in (overrides or {}).items():
        head, _, option = str(key).partition("#")
        forest_option = head == "forest" and option and "#" not in option and "forest" in parser
        if key not in parser and not forest_option:
            raise ValueError(f"override {key!r}: {os.fspath(config)} has no such config id.")
        if forest_option:
            ForestSpec.create({"length": 1}, **{option: value})  # an unknown or invalid option fails here
        parser[key] = value
    return parser

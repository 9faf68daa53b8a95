"""Argument checks shared by every package of monai_shf (no MONAI import, so ``forest`` and ``slide``
use them too).

Every check raises a ``ValueError`` or ``TypeError`` whose message names the parameter and the
expected form, so that bad input never surfaces as an obscure numpy/torch error or an assertion.
"""

from __future__ import annotations

import difflib
import enum
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_output_path",
    "check_not_input",
    "check_int",
    "check_bool",
    "check_choice",
    "check_array",
    "check_finite",
    "to_numpy",
]


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise if it is not an integer ``>= minimum``.

    ``bool`` and floats (even integral ones like ``4.0``) are rejected: a length or size given as a
    float is almost always a unit or config mistake.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value.item())
        else:
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a Python bool, or raise ``TypeError`` if it is not a bool (``0``/``1`` or
    strings such as ``"false"`` are rejected: a flag given as anything else is a config mistake)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__}).")
    return bool(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...] | type[enum.Enum]) -> str:
    """``value`` as a plain string if it is one of ``choices`` (strings, or a string enum such as
    :class:`monai_shf.enums.SerializeMode`, whose members are accepted too), else a ``ValueError`` naming
    ``name``, the choices and the closest one."""
    if isinstance(choices, type) and issubclass(choices, enum.Enum):
        choices = tuple(member.value for member in choices)
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name} must be one of {choices}, got {value!r}{hint}.")
    return value


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view (CPU tensors, arrays) or copy (device tensors) of ``x`` without MONAI metadata.

    numpy has no bfloat16: a bfloat16 tensor becomes a float32 copy (exact: every bfloat16 value is
    a float32 value), so that callers never meet torch's "unsupported ScalarType" error."""
    if isinstance(x, torch.Tensor):
        _check_not_meta(x, "the tensor")
        x = x.detach().cpu().as_subclass(torch.Tensor)
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def check_array(
    x: Any,
    name: str,
    ndims: tuple[int, ...],
    finite: bool = True,
) -> None:
    """Check that ``x`` is a numpy array or torch tensor with ``x.ndim`` in ``ndims``, non-empty and
    (optionally) free of NaN/inf. Bool, integer and floating dtypes are all accepted."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}.")
    if isinstance(x, torch.Tensor):
        _check_not_meta(x, name)
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {tuple(x.shape)}.")
    if any(int(s) == 0 for s in x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}.")
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must have a bool, integer or float dtype, got {x.dtype}.")
    elif x.is_complex():
        raise TypeError(f"{name} must have a bool, integer or float dtype, got {x.dtype}.")
    if finite:
        check_finite(x, name)


def _check_not_meta(x: torch.Tensor, name: str) -> None:
    if x.is_meta:
        raise ValueError(
            f"{name} is a tensor on the 'meta' device (a shape without data, shaped {tuple(x.shape)}): "
            "materialise it (e.g. torch.empty_like(x, device='cpu')) or pass real data."
        )


def check_finite(x: Any, name: str) -> None:
    """Raise ``ValueError`` if a float array/tensor holds NaN or inf; finite values are never
    reported, however close to the dtype's maximum.

    A sum is one vectorised pass with no temporary: it is finite only when every value is. A sum
    that is not finite is either NaN/inf in the data or an overflow of huge finite values (e.g.
    float32 values near 3.4e38, or a few thousand float16 values above 30): only then is the exact
    elementwise test run, and only it decides."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            return
        with np.errstate(over="ignore", invalid="ignore"):
            total = x.sum()
        if not np.isfinite(total) and not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
    elif x.is_floating_point() and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values.")


def check_output_path(path: Any, name: str = "path") -> Path:
    """``path`` as a :class:`pathlib.Path` to a file that may be written: its folder must exist and it must
    not be a folder itself (``ValueError``/``TypeError`` naming ``name`` otherwise)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {type(path).__name__}.")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"output folder {str(path.parent)!r} of {str(path)!r} does not exist.")
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a folder, expected a file name.")
    return path


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)  # one inode: the same path, a symbolic or a hard link
    except OSError:  # one of them does not exist (yet): compare where the names lead
        return os.path.realpath(a) == os.path.realpath(b)


def check_not_input(path: Any, inputs: Any, name: str = "path") -> None:
    """Raise ``ValueError`` when the output ``path`` is one of ``inputs``: the same path, a symbolic
    link to one, or a hard link of one (``os.path.samefile``); for names that do not exist yet, the
    same resolved path. Every writer calls it before writing, so that no output ever replaces a file
    the user passed in.

    Args:
        path: the output file.
        inputs: a path or a list / tuple / set of them (``None`` entries and non-paths are skipped; an object
            with a ``path`` attribute, such as an open slide, counts as that path).
        name: the output's parameter name, for the message.
    """
    if not isinstance(inputs, (list, tuple, set, frozenset)):
        inputs = [inputs]
    for item in inputs:
        source = getattr(item, "path", item)
        if isinstance(source, (str, os.PathLike)) and _same_file(path, source):
            raise ValueError(
                f"{name} {os.fspath(path)!r} is the input {os.fspath(source)!r} (the same file, or a link to it): "
                "writing it would destroy the input; choose another output path."
            )

"""Embedded datasets: a synthetic generator (the default when no real data is given)."""

from .synthetic import synthetic_tissue_2d

__all__ = ["synthetic_tissue_2d"]

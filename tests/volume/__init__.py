"""Tests of monai_shf.volume (a package: its module names repeat those of tests/slide)."""

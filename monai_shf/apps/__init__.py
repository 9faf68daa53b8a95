"""Applications built on the library (what ``monai-shf`` commands run): demos, figures and volume inference."""

from .demo import demo_figure, find_nuclei2d, patching_demo, training_demo
from .figure import shf_figure
from .volume import segment_volume

__all__ = ["training_demo", "patching_demo", "demo_figure", "find_nuclei2d", "shf_figure", "segment_volume"]

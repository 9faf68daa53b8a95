"""Fixtures of the volume tests (the helpers that write test stores are in volume_files.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

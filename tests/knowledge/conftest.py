"""The knowledge tests use the CLI helpers of tests/integration (run_compozy: a real process)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

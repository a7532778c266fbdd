"""The knowledge tests use helpers of tests/integration (run_compozy: a real process;
knowledge_support: a project with a knowledge base)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

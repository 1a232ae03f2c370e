"""Where the benchmarks find the two Python environments (main and comparison)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checkouts() -> list[Path]:
    """This checkout, then the main checkout when this one is a git worktree."""
    roots = [ROOT]
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        roots.append(Path(common).parent)
    except (OSError, subprocess.CalledProcessError):
        pass
    return roots


def env_python(name: str) -> str:
    """``<checkout>/<name>/bin/python`` of the first checkout that has it, else this Python."""
    for root in _checkouts():
        candidate = root / name / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return sys.executable

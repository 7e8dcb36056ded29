"""The errors a stage reports as "cannot run" (exit 2, never retried), and the checks that raise them.

Library code raises these; the stage launcher (r1_pipeline/stage.py) turns a StageError into one line on
stderr and exit code 2. Kept apart so that no library module needs to import the launcher.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class StageError(RuntimeError):
    """A stage cannot run (a missing input, a bad file): the message names what and where."""


def require(path: str | Path, producer: str) -> Path:
    """An input produced by an earlier stage; a clear error when it is absent."""
    p = Path(path)
    if not p.exists():
        raise StageError(f"input {p} not found: run the `{producer}` stage first (dvc repro {producer})")
    return p


def require_package(module: str, key: str, install: str) -> None:
    """A param that needs an optional package (vllm, liger-kernel): a clear error naming the key when it is absent."""
    if importlib.util.find_spec(module) is None:
        raise StageError(f"{key} is true but {module} is not installed ({install})")

"""Entry point of the Prefect flow `r1-pipeline` (prefect.yaml: `flows/r1_pipeline.py:r1_pipeline`).

The flow lives in flows/pipeline.py. This file only re-exports it, after one repair: Prefect loads an
entrypoint file as a module named after the file, so this file is imported under the name `r1_pipeline`,
the project package's own name, and `import r1_pipeline.<module>` would then look inside this file. When that
happens, the package is put back under its name (from this checkout) before anything imports from it.

Run it:
    r1 run [--stages a,b] [--set key=value]                   # in-process
    prefect deployment run r1-pipeline/local --watch          # through a deployment (docs/orchestration.md)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "r1_pipeline":  # this file, loaded under the package's name
    import importlib.util

    _pkg_dir = Path(__file__).resolve().parent.parent / "r1_pipeline"
    _spec = importlib.util.spec_from_file_location(
        "r1_pipeline", _pkg_dir / "__init__.py", submodule_search_locations=[str(_pkg_dir)]
    )
    _pkg = importlib.util.module_from_spec(_spec)
    sys.modules["r1_pipeline"] = _pkg
    _spec.loader.exec_module(_pkg)
    _root = str(_pkg_dir.parent)
    if _root not in sys.path:
        sys.path.append(_root)  # so `flows.pipeline` resolves to this checkout too

from flows.pipeline import PipelineFailed, StageFailed, r1_pipeline  # noqa: E402

__all__ = ["r1_pipeline", "PipelineFailed", "StageFailed"]

if __name__ == "__main__":
    r1_pipeline()

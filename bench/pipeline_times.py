"""Benchmark: run every stage of the pipeline on a profile and print the wall time of each.

    python bench/pipeline_times.py                 # tiny profile, fresh work dir under /tmp
    python bench/pipeline_times.py --profile micro --workdir /tmp/r1-micro

Each stage runs as DVC runs it (`python -m tasks.<stage>` in the work dir), so the times include process
start-up and imports. The work dir keeps every output (models, report) for inspection afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1_pipeline.cli import STAGES  # noqa: E402
from r1_pipeline.config import apply_overrides, profile_dict, to_yaml, validate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny", help="profile to run (default: tiny)")
    parser.add_argument("--workdir", help="where outputs go (default: a new temp dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY.PATH=VALUE override")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages (default: all)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"r1-bench-{args.profile}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = validate(apply_overrides(profile_dict(args.profile), args.overrides), f"profile {args.profile}", ROOT)
    (workdir / "params.yaml").write_text(to_yaml(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    times: dict[str, float] = {}
    for stage in args.stages.split(","):
        start = time.time()
        with open(workdir / f"{stage}.log", "w") as log:
            rc = subprocess.call([sys.executable, "-m", f"tasks.{stage}"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        times[stage] = time.time() - start
        print(f"{stage:<10} {times[stage]:7.1f} s  {'ok' if rc == 0 else f'FAILED (exit {rc}, see {workdir}/{stage}.log)'}", flush=True)
        if rc:
            return rc
    print(f"{'total':<10} {sum(times.values()):7.1f} s   ({os.cpu_count()} CPUs, profile {args.profile}, outputs in {workdir})")
    report = workdir / "outputs" / "report" / "report.md"
    if report.exists():
        print("\n" + report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

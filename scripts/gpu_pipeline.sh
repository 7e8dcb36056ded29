#!/usr/bin/env bash
# The `gpu` profile end to end on one GPU machine that lacks some packages (carried as wheels in .whl/).
#   bash scripts/gpu_pipeline.sh [STAGES]      STAGES: comma-separated (default: all), OUT: results folder
# Writes per-stage logs, the stage-time table, the report and the MLflow SQLite store under $OUT.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" TOKENIZERS_PARALLELISM=false
python3 scripts/gpu_check_imports.py 2>&1 | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/versions.txt"
timeout "${PIPELINE_TIMEOUT:-540}" python3 bench/pipeline_times.py --profile gpu --workdir "$PWD/gpu-work" --stages "${1:-data,base,sft,grpo,r1_zero,rejection,distill,evaluate,report}" \
  2>&1 | tee "$OUT/pipeline_times.txt"
rc=${PIPESTATUS[0]}
# the device tool returns at most 8 files: stage logs and the report folder travel as one tarball
tar czf "$OUT/stage_logs.tgz" gpu-work/*.log gpu-work/outputs/report gpu-work/outputs/metrics 2>/dev/null
[ -f gpu-work/outputs/eval/metrics.json ] && cp gpu-work/outputs/eval/metrics.json "$OUT/eval_metrics.json"
exit $rc

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
# MLflow: the SQLite store and its artifacts stay in the work dir (bench/pipeline_times.py's default) and come back as one tarball
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -c "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in ['torch','transformers','trl','accelerate','deepspeed','datasets','mlflow-skinny','math-verify']))" 2>&1 | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/versions.txt"
timeout "${PIPELINE_TIMEOUT:-540}" python3 bench/pipeline_times.py --profile gpu --workdir "$PWD/gpu-work" --stages "${1:-data,base,sft,grpo,r1_zero,rejection,distill,evaluate,report}" \
  2>&1 | tee "$OUT/pipeline_times.txt"
rc=${PIPESTATUS[0]}
# the device tool returns at most 8 files: stage logs and the report folder travel as one tarball
tar czf "$OUT/stage_logs.tgz" gpu-work/*.log gpu-work/outputs/report gpu-work/outputs/metrics 2>/dev/null
tar czf "$OUT/mlflow.tgz" gpu-work/mlflow.db gpu-work/mlartifacts 2>/dev/null
[ -f gpu-work/outputs/eval/metrics.json ] && cp gpu-work/outputs/eval/metrics.json "$OUT/eval_metrics.json"
exit $rc

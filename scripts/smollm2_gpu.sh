#!/usr/bin/env bash
# The `smollm2` profile on a GPU machine that has no hub access and takes at most 64 MiB per call (the device
# tool here): the 98 MB GGUF travels in parts over consecutive calls and is joined and checked there.
#
#   bash scripts/smollm2_gpu.sh prepare          # here: .whl/, .gpu-data/, .gpu-parts{1,2}/ (ignored folders)
#   bash scripts/smollm2_gpu.sh stash            # there, carrying .whl .gpu-data .gpu-parts1
#   bash scripts/smollm2_gpu.sh run data,base    # there, carrying .gpu-parts2: join, check sha256, run stages
#   bash scripts/smollm2_gpu.sh run r1_zero,...  # later calls while the machine is warm: more stages
#
# Files kept between calls live outside the checkout (/root/r1-stash, /root/r1-smollm2, /tmp/site): they stay
# only while the machine is warm (30 s after a call). Every call leaves logs, the stage-time table, the eval
# metrics and the MLflow store (a tarball) under $OUT.
set -uo pipefail
REPO=${REPO:-$PWD}  # the code to run (default: this checkout)
STASH=/root/r1-stash
WORK=/root/r1-smollm2
OUT=${OUT:-$PWD/smollm2-out}
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

prepare() {
  bash scripts/build_gpu_wheels.sh .whl >/dev/null
  rm -f .whl/deepspeed-*.whl .whl/liger_kernel-*.whl  # this profile uses neither: 3 MiB more for the GGUF
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl gguf==0.19.0
  .venv/bin/r1 models fetch smollm2
  rm -rf .gpu-data .gpu-parts1 .gpu-parts2 .gpu-parts3 && mkdir -p .gpu-data .gpu-parts1 .gpu-parts2
  for f in gsm8k/train.jsonl gsm8k/test.jsonl math500/test.jsonl; do
    mkdir -p ".gpu-data/$(dirname $f)" && gzip -c "../shared/data/benchmarks/$f" > ".gpu-data/$f.gz"
  done
  # 36 + 58 MiB: the first call also carries the wheels (23 MiB) and the data (2 MiB)
  head -c 37748736 ".cache/models/$GGUF" > .gpu-parts1/gguf.part-1
  tail -c +37748737 ".cache/models/$GGUF" > .gpu-parts2/gguf.part-2
  du -sh .whl .gpu-data .gpu-parts*
}

stash() {
  mkdir -p "$STASH" "$OUT"
  for d in .gpu-parts1 .gpu-parts2 .gpu-parts3; do [ -d $d ] && cp $d/* "$STASH/"; done
  if [ -d .gpu-data ]; then
    mkdir -p "$WORK/data" && cp -r .gpu-data/* "$WORK/data/" && find "$WORK/data" -name '*.gz' -exec gunzip -f {} +
  fi
  if [ -d .whl ] && [ ! -d /tmp/site/trl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  fi
  ls -la "$STASH" | tee "$OUT/stash.txt"
}

run() {
  stash
  export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  export MLFLOW_TRACKING_URI=sqlite:///$WORK/mlflow.db
  mkdir -p "$WORK/.cache/models"
  if [ ! -f "$WORK/.cache/models/$GGUF" ]; then
    cat "$STASH"/gguf.part-* > "$WORK/.cache/models/$GGUF"
  fi
  echo "$SHA  $WORK/.cache/models/$GGUF" | sha256sum -c - || exit 1
  python3 - "$WORK" <<'PY'
import sys, yaml
from r1_pipeline.config import profile_dict
work = sys.argv[1]
raw = profile_dict("smollm2")
for section in ("rl_sources", "cold_start_sources", "eval_sets"):
    for src in raw["data"][section]:
        src["path"] = src["path"].replace("../shared/data/benchmarks", f"{work}/data")
open(f"{work}/params.yaml", "w").write("# profile: smollm2 (paths of this machine)\n" + yaml.safe_dump(raw, sort_keys=False))
PY
  python3 -c "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in ['torch','transformers','trl','accelerate','datasets','gguf']))" | tee -a "$OUT/versions.txt"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/versions.txt"
  cd "$WORK"
  rc=0
  for stage in ${1//,/ }; do
    start=$(date +%s%N)
    python3 -m tasks.$stage > "$WORK/$stage.log" 2>&1
    code=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf "%-10s exit %d  %d.%01d s\n" "$stage" $code $((ms / 1000)) $((ms % 1000 / 100)) | tee -a "$WORK/times.txt"
    tail -n 3 "$WORK/$stage.log"
    [ $code -ne 0 ] && { rc=$code; tail -n 40 "$WORK/$stage.log"; break; }
  done
  cp "$WORK/times.txt" "$OUT/times.txt"
  [ -f outputs/eval/metrics.json ] && cp outputs/eval/metrics.json "$OUT/eval_metrics.json"
  tar czf "$OUT/logs.tgz" *.log outputs/logs outputs/metrics outputs/report outputs/rejection/stats.json \
      outputs/models/*/r1_model_info.json 2>/dev/null
  [ -f outputs/eval/records.jsonl ] && gzip -c outputs/eval/records.jsonl > "$OUT/eval_records.jsonl.gz"
  tar czf "$OUT/mlflow.tgz" mlflow.db 2>/dev/null
  return $rc
}

case "${1:-}" in
  prepare) prepare ;;
  stash) stash ;;
  run) run "${2:-data,base,sft,grpo,r1_zero,rejection,distill,evaluate,report}" ;;
  *) echo "usage: $0 prepare | stash | run STAGES" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The tiny profile's seeds x thread counts on another machine's CPUs (the GPU host, CUDA hidden, its torch),
# all six runs in parallel, one `bench/pipeline_times.py` per (seed, threads): a check that the conclusions
# hold on a different CPU, torch build and kernels, not a timing of the 2-core laptop target.
#   bash scripts/cpu_seeds_remote.sh      (needs .whl/ carried; writes $OUT/seed<S>-t<T>.txt)
set -uo pipefail
OUT=${OUT:-$PWD/cpu-seeds-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
d=/tmp/site/mlflow-3.17.2.dist-info; mkdir -p $d && printf 'Metadata-Version: 2.1\nName: mlflow\nVersion: 3.17.2\n' > $d/METADATA
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false CUDA_VISIBLE_DEVICES=""
python3 -c "import torch, platform; print('torch', torch.__version__, platform.processor(), torch.get_num_threads(), 'threads')"
start=$SECONDS
for seed in 0 1 2; do
  for t in 1 2; do
    timeout "${RUN_LIMIT_S:-570}" python3 bench/pipeline_times.py --seeds $seed --threads $t --workdir "$PWD/cpu-seeds/s$seed-t$t" \
      > "$OUT/seed$seed-t$t.txt" 2>&1 &
  done
done
wait
echo "all runs done ($((SECONDS - start)) s)"
for f in "$OUT"/seed*.txt; do echo "== $f"; grep -A3 "^| run " "$f" | tail -1; done

#!/usr/bin/env bash
# Issue 16's remaining GPU measurements on one H200, each mode one device command (< 10 minutes):
#   bash scripts/gpu_issue16.sh sft        greedy equivalence of hf_compiled (fp32 / bf16), then SFT rows:
#                                          packing in rows + Liger with flex attention / larger batch at 1k,
#                                          flex + Liger at 4k and 8k
#   bash scripts/gpu_issue16.sh equiv      greedy equivalence with teacher forcing and an eager floor; base cost
#   bash scripts/gpu_issue16.sh fair       SFT 1k/4k/8k at 32k token slots: ours vs bare TRL (same / best setting)
#   bash scripts/gpu_issue16.sh final      greedy (3 cases) then the fair SFT rows at 4k/8k, in one command
#   bash scripts/gpu_issue16.sh close      the base stage's cost/* on the GPU, then SFT at 4k with every row at
#                                          65,536 token slots (ours vs bare TRL, same memory setting)
#   bash scripts/gpu_issue16.sh pipeline   the gpu profile, every training stage, cost/* metrics from MLflow
#                                          and the report's cost table
# Needs .whl/ (scripts/build_gpu_wheels.sh) carried; writes under $OUT (at most 8 files come back).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
# the image has mlflow-skinny but no `mlflow` distribution; r1_pipeline.registry asks its version
d=/tmp/site/mlflow-3.17.2.dist-info; mkdir -p $d && printf 'Metadata-Version: 2.1\nName: mlflow\nVersion: 3.17.2\n' > $d/METADATA
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
start=$SECONDS
python3 -c "import importlib.metadata as m, torch; print(', '.join(f'{p} {m.version(p)}' for p in ['torch','transformers','trl','liger-kernel','mlflow-skinny']), torch.cuda.get_device_name())"

case "${1:-sft}" in
sft)
  timeout 190 python3 bench/greedy_equivalence.py --out "$OUT/greedy.json" > "$OUT/greedy.txt" 2>&1
  echo "greedy rc=$? ($((SECONDS - start)) s)"; grep -v '^{' "$OUT/greedy.txt" | tail -8
  # 1k: the baseline row (rows + Liger) and what a user can set on top of it, side by side in one process
  python3 bench/train_bench.py --mode gpu --out "$OUT/bench" --sections liger --seq-lens 1024 --max-step-s 120 \
    --rows ours_rows_liger,ours_rows_liger_flex,ours_rows_liger_bs2x,ours_rows_liger_bs4x,ours_rows_liger_flex_bs2x \
    --budget-s 190 > "$OUT/bench_1k.txt" 2>&1
  echo "sft 1k rc=$? ($((SECONDS - start)) s)"
  # 4k, 8k: flex + Liger; no row starts later than ~100 s before the command's 600 s
  left=$((470 - (SECONDS - start))); [ $left -lt 1 ] && left=1
  python3 bench/train_bench.py --mode gpu --out "$OUT/bench" --append --sections liger --seq-lens 4096,8192 \
    --max-step-s 120 --rows ours_rows_liger_flex --budget-s $left --pack-logs > "$OUT/bench_long.txt" 2>&1
  echo "sft 4k/8k rc=$? ($((SECONDS - start)) s)"
  grep -E '^\| (seq|[0-9])' "$OUT/bench/table.md" | cut -c1-230
  ;;
more)
  # bf16 greedy: how far (in bf16 rounding steps) the compiled path's token is from eager's; then flex + Liger
  # with a larger batch at 4k and 8k
  timeout 120 python3 bench/greedy_equivalence.py --cases 2,4 --out "$OUT/greedy_ulps.json" > "$OUT/greedy_ulps.txt" 2>&1
  echo "greedy rc=$? ($((SECONDS - start)) s)"; grep -v '^{' "$OUT/greedy_ulps.txt" | tail -5
  left=$((460 - (SECONDS - start))); [ $left -lt 1 ] && left=1
  python3 bench/train_bench.py --mode gpu --out "$OUT/bench" --sections liger --seq-lens 4096,8192 --max-step-s 120 \
    --rows ours_rows_liger_flex_bs2x,ours_rows_liger_flex_bs4x --budget-s $left --pack-logs > "$OUT/bench_long.txt" 2>&1
  echo "sft 4k/8k rc=$? ($((SECONDS - start)) s)"
  grep -E '^\| (seq|[0-9])' "$OUT/bench/table.md" | cut -c1-230
  ;;
equiv)
  # greedy equivalence with the teacher-forced columns and the eager-vs-eager floor; then the base stage's
  # pretraining cost (cost/* in MLflow) on the gpu profile
  timeout 300 python3 bench/greedy_equivalence.py --out "$OUT/greedy_tf.json" > "$OUT/greedy_tf.txt" 2>&1
  echo "greedy rc=$? ($((SECONDS - start)) s)"; grep -v '^{' "$OUT/greedy_tf.txt" | tail -8
  timeout 200 python3 bench/pipeline_times.py --profile gpu --workdir "$PWD/gpu-base" --stages data,base \
    --set base.pretrain_steps=150 > "$OUT/base_times.txt" 2>&1
  echo "base rc=$? ($((SECONDS - start)) s)"; tail -6 "$OUT/base_times.txt"
  python3 - gpu-base/mlflow.db <<'PY' | tee "$OUT/base_cost.txt"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
for name, k, v in con.execute("select r.name, m.key, m.value from metrics m join runs r on r.run_uuid=m.run_uuid "
                              "where m.key like 'cost/%' order by r.name, m.key"):
    print(f"{name:8s} {k:34s} {v:.6g}")
PY
  ;;
fair)
  # SFT at 1k/4k/8k, every row at the same 32,768 token slots per device step (batch 32/8/4): ours (packing in
  # rows + Liger + flex) against bare TRL with the same memory setting (gradient checkpointing off) and bare
  # TRL's best setting (packing + Liger, checkpointing off), side by side in one command
  python3 bench/train_bench.py --mode gpu --out "$OUT/bench" --sections sft,liger --seq-lens 1024,4096,8192 \
    --tokens-per-step 32768 --max-step-s 120 --rows bare_nogc,bare_best,ours_rows_liger_flex \
    --budget-s 470 --pack-logs > "$OUT/bench_fair.txt" 2>&1
  echo "sft fair rc=$? ($((SECONDS - start)) s)"
  grep -E '^\| (seq|[0-9])' "$OUT/bench/table.md" | cut -c1-230
  ;;
final)
  # the last device minutes of a session, in one command: greedy equivalence (fp32 small, bf16 small, bf16 0.5B)
  # with the teacher-forced columns, then the fair SFT rows at 4k and 8k (1k: the 2026-12-03 rows)
  timeout 170 python3 bench/greedy_equivalence.py --cases 0,2,4 --out "$OUT/greedy_tf.json" > "$OUT/greedy_tf.txt" 2>&1
  echo "greedy rc=$? ($((SECONDS - start)) s)"; grep -v '^{' "$OUT/greedy_tf.txt" | tail -6
  left=$((450 - (SECONDS - start))); [ $left -lt 1 ] && left=1
  python3 bench/train_bench.py --mode gpu --out "$OUT/bench" --sections sft,liger --seq-lens 4096,8192 \
    --tokens-per-step 32768 --max-step-s 120 --rows bare_nogc,bare_best,ours_rows_liger_flex \
    --budget-s $left --pack-logs > "$OUT/bench_fair.txt" 2>&1
  echo "sft fair rc=$? ($((SECONDS - start)) s)"
  grep -E '^\| (seq|[0-9])' "$OUT/bench/table.md" | cut -c1-230
  ;;
close)
  # the base stage's pretraining cost (cost/* in MLflow, the report's base row) on the gpu profile, shortened
  timeout 220 python3 bench/pipeline_times.py --profile gpu --workdir "$PWD/gpu-base" --stages data,base \
    --set base.pretrain_steps=150 > "$OUT/base_times.txt" 2>&1
  echo "base rc=$? ($((SECONDS - start)) s)"; tail -4 "$OUT/base_times.txt"
  python3 - gpu-base/mlflow.db <<'PY' | tee "$OUT/base_cost.txt"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
rows = con.execute("select r.name, m.key, m.value from metrics m join runs r on r.run_uuid=m.run_uuid "
                   "where m.key like 'cost/%' order by r.name, m.key").fetchall()
for name, k, v in rows:
    print(f"{name:8s} {k:34s} {v:.6g}")
print(f"{len(rows)} cost/* metrics in {len({r[0] for r in rows})} runs")
PY
  # SFT at 4k, every row at 65,536 token slots per device step (batch 16): the batch at which ours read 35.5%
  left=$((560 - (SECONDS - start))); [ $left -lt 1 ] && left=1
  python3 bench/train_bench.py --mode gpu --out "$OUT/bench" --sections sft,liger --seq-lens 4096 \
    --tokens-per-step 65536 --max-step-s 120 --rows ours_rows_liger_flex,bare_nogc,bare_best \
    --budget-s $left --pack-logs > "$OUT/bench_4k.txt" 2>&1
  echo "sft 4k rc=$? ($((SECONDS - start)) s)"
  grep -E '^\| (seq|[0-9])' "$OUT/bench/table.md" | cut -c1-230
  ;;
pipeline)
  # every training stage of the gpu profile, shortened where noted; DeepSpeed off (no deepspeed wheel carried),
  # hf_compiled rollouts for GRPO and R1-Zero
  timeout 500 python3 bench/pipeline_times.py --profile gpu --workdir "$PWD/gpu-work" \
    --stages data,base,sft,grpo,r1_zero,rejection,distill,evaluate,report \
    --set base.pretrain_steps=150 --set distill.student_pretrain_steps=150 \
    --set sft.deepspeed=none --set grpo.deepspeed=none --set r1_zero.deepspeed=none --set distill.deepspeed=none \
    --set grpo.generation_backend=hf_compiled --set r1_zero.generation_backend=hf_compiled \
    > "$OUT/pipeline_times.txt" 2>&1
  echo "pipeline rc=$? ($((SECONDS - start)) s)"; tail -25 "$OUT/pipeline_times.txt"
  db=gpu-work/mlflow.db
  python3 - "$db" > "$OUT/cost_metrics.txt" 2>&1 <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
rows = con.execute("select r.name, m.key, m.value from metrics m join runs r on r.run_uuid=m.run_uuid "
                   "where m.key like 'cost/%' order by r.name, m.key").fetchall()
for name, k, v in rows:
    print(f"{name:12s} {k:34s} {v:.6g}")
print(f"{len(rows)} cost/* metrics in {len({r[0] for r in rows})} runs")
PY
  cat "$OUT/cost_metrics.txt"
  rep=$(find gpu-work/outputs/report -name '*.md' | head -1)
  [ -n "$rep" ] && cp "$rep" "$OUT/report.md" && sed -n '/## Cost by stage/,$p' "$OUT/report.md" | head -14
  tar czf "$OUT/stage_logs.tgz" gpu-work/*.log gpu-work/outputs/logs gpu-work/outputs/metrics 2>/dev/null
  ;;
esac
echo "total $((SECONDS - start)) s"

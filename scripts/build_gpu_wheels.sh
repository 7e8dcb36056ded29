#!/usr/bin/env bash
# Build .whl/: the Python packages a GPU benchmark/training run needs that the GPU machine's image lacks,
# as wheels for CPython 3.12 on manylinux x86_64, to carry there and install with
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# then check them with `python3 scripts/gpu_check_imports.py`.
#
# Versions are the ones the project pins and checks together on CPU (pyproject.toml, the .venv), so the GPU
# run uses the same TRL/datasets/DeepSpeed/MLflow code as the CPU runs.
#
# What the GPU image is assumed to have already (its package list, 2026-11-17; NOT carried, to stay small):
#   torch 2.11 (+triton), transformers 5.17, accelerate 1.15, peft, numpy, pandas, pyarrow, safetensors,
#   tokenizers, huggingface-hub, pyyaml, requests, packaging, psutil, tqdm, jinja2, markupsafe, filelock,
#   sympy, mpmath, xxhash, msgpack, einops, ninja, py-cpuinfo, nvidia-ml-py, protobuf, click, cloudpickle,
#   anyio, h11, annotated-doc, zipp, urllib3, certifi, idna, charset-normalizer, regex, attrs, rich.
# Carried although maybe present, because their version matters and they are small and pure Python:
#   fsspec (datasets 5.2 needs <=2026.9.0), typing-extensions (pydantic 2.14 needs >=4.16).
# Not carried: the `mlflow` meta-package (its UI server and scikit-learn/scipy/Flask deps):
#   mlflow-skinny holds the whole Python API and the SQLite store, which is all a training run uses.
#   vLLM (hundreds of MB; the benchmark reports its rows as n/a).
#
# Usage: bash scripts/build_gpu_wheels.sh [DEST]   (DEST defaults to .whl in the project root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.whl}"
PYTHON="${PYTHON:-python3}"
# A Python with torch, used only to build DeepSpeed's pure-Python wheel (its setup.py imports torch).
BUILD_PYTHON="${BUILD_PYTHON:-$ROOT/.venv/bin/python}"

PACKAGES=(
  # training stack
  trl==1.16.0
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
  liger-kernel==0.8.5
  hjson==3.1.0  # deepspeed's only missing dependency besides pydantic
  # answer verification (the accuracy reward)
  math-verify==0.9.0 latex2sympy2_extended==1.11.0  # + antlr4-python3-runtime 4.9.3, built below
  # our config schema (and deepspeed, fastapi, mlflow)
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
  # MLflow tracking to a local SQLite file
  mlflow-skinny==3.17.2 mlflow-tracing==3.17.2
  cachetools==7.3.3 databricks-sdk==0.162.0 google-auth==2.63.0 pyasn1==0.6.5 pyasn1-modules==0.4.2
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
  gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3 importlib-metadata==9.1.0
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2
  python-dotenv==1.2.4 sqlparse==0.6.1 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
  # mlflow's SQLite store imports cryptography.fernet (model-registry secrets) even for plain tracking
  cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
)

mkdir -p "$DEST"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${PACKAGES[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# Published as source only: build pure-Python wheels here (they install on any CPython 3).
# antlr4 4.9.3 is the runtime math-verify's [antlr4_9_3] extra asks for (4.13 conflicts with dvc's hydra).
if ! ls "$DEST"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w "$DEST" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
fi

# DeepSpeed publishes no wheel either: build a pure-Python one (ops are JIT-compiled on first use, if ever;
# ZeRO-2 with the Trainer's torch AdamW needs none). No build isolation: setup.py imports torch.
if ! ls "$DEST"/deepspeed-0.19.8-*.whl >/dev/null 2>&1; then
  DS_BUILD_OPS=0 "$BUILD_PYTHON" -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 -w "$DEST" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
fi

# One version of each package: two wheels of one name stop the whole install there.
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "error: several versions in $DEST of: $dupes (delete the stale wheels)" >&2
  exit 1
fi

ls -1 "$DEST"/*.whl | xargs -n1 basename
du -sh "$DEST"
total=$(du -sm "$DEST" | cut -f1)
if [ "$total" -gt 50 ]; then
  echo "warning: $DEST is ${total} MiB, over the 50 MiB the device carry allows" >&2
fi

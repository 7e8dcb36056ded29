"""Where every stage reads and writes, relative to the project (DVC's working directory).

The layout is fixed in code (not in params) so `dvc.yaml` can declare the same paths as outs.
Resumable trainer checkpoints live under `checkpoints/`, outside every declared out, because `dvc repro`
deletes declared outs before it runs a stage.
"""

from pathlib import Path

OUTPUTS = Path("outputs")
CHECKPOINTS = Path("checkpoints")

DATA_DIR = OUTPUTS / "data"
RL_TRAIN = DATA_DIR / "rl_train.jsonl"
RL_VAL = DATA_DIR / "rl_val.jsonl"
COLD_START = DATA_DIR / "cold_start.jsonl"
CORPUS = DATA_DIR / "corpus.jsonl"
EVAL_DIR = DATA_DIR / "eval"
DATA_STATS = DATA_DIR / "stats.json"

MODELS_DIR = OUTPUTS / "models"


def model_dir(stage: str) -> Path:
    """Final model of a stage: outputs/models/<stage> (tokenizer saved next to the weights)."""
    return MODELS_DIR / stage


def checkpoint_dir(stage: str) -> Path:
    return CHECKPOINTS / stage


def metrics_file(stage: str) -> Path:
    return OUTPUTS / "metrics" / f"{stage}.json"


REJECTION_DIR = OUTPUTS / "rejection"
REJECTION_DATA = REJECTION_DIR / "traces.jsonl"
REJECTION_STATS = REJECTION_DIR / "stats.json"

EVAL_OUT = OUTPUTS / "eval"
EVAL_RECORDS = EVAL_OUT / "records.jsonl"
EVAL_METRICS = EVAL_OUT / "metrics.json"

REPORT_DIR = OUTPUTS / "report"
TRAIN_LOGS = OUTPUTS / "logs"


def train_log(stage: str) -> Path:
    """Per-step training log (JSONL) of a stage, read by the report for curves."""
    return TRAIN_LOGS / f"{stage}.jsonl"

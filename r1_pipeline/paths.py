"""Where every stage reads and writes, relative to the project (DVC's working directory).

The layout is fixed in code (not in params) so `dvc.yaml` can declare the same paths as outs.
Resumable trainer checkpoints live under `checkpoints/`, outside every declared out, because `dvc repro`
deletes declared outs before it runs a stage.
"""

from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

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


@lru_cache(maxsize=None)
def stage_names(root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The pipeline's stages in dvc.yaml's order (which is DVC's topological order): the one list of them, for
    the CLI, the report and the tests. The flow asks `dvc dag` for the graph itself (r1_ops.orchestration)."""
    import yaml

    path = Path(root) / "dvc.yaml"
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ValueError(f"{path}: no `stages:` mapping")
    return tuple(stages)

"""Resume keys and which checkpoints may be resumed (the trainer-level behaviour: tests/integration/test_resume.py)."""

from __future__ import annotations

import json

import pytest

from r1_pipeline import checkpoints
from r1_pipeline.config import Config


def key(cfg: Config, **kw) -> str:
    return checkpoints.resume_key(cfg, "sft", cfg.sft, "inputs-v1", **kw)


def test_resume_key_covers_params_project_code_and_libraries(monkeypatch):
    cfg = Config()
    base = key(cfg)
    assert key(Config()) == base
    assert key(cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"learning_rate": 1e-5})})) != base
    assert key(cfg.model_copy(update={"project": cfg.project.model_copy(update={"precision": "bf16"})})) != base
    assert checkpoints.resume_key(cfg, "sft", cfg.sft, "inputs-v2") != base
    assert checkpoints.resume_key(cfg, "grpo", cfg.sft, "inputs-v1") != base  # other code
    versions = checkpoints.library_versions()
    monkeypatch.setattr(checkpoints, "library_versions", lambda: {**versions, "trl": "9.9.9"})
    assert key(cfg) != base


def make_checkpoint(folder, step, key=None, state=True):
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"w")
    if state:
        (ckpt / "trainer_state.json").write_text("{}")
    if key is not None:
        (ckpt / checkpoints.COMPLETE_MARKER).write_text(json.dumps({"resume_key": key, "step": step}))
    return ckpt


def test_prepare_resumes_the_last_complete_checkpoint_and_moves_partial_ones_aside(tmp_path, capsys):
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / checkpoints.KEY_FILE).write_text("k")
    make_checkpoint(folder, 2, "k")
    make_checkpoint(folder, 4, "k")
    make_checkpoint(folder, 6, None)  # killed during the save: no marker
    make_checkpoint(folder, 8, "k", state=False)  # marker but no trainer state: not complete either
    assert checkpoints.prepare(folder, "k") == folder / "checkpoint-4"
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert len(list((folder / "incomplete").iterdir())) == 2
    assert "checkpoint-6 is incomplete" in capsys.readouterr().out


@pytest.mark.parametrize("stored", [None, "other"])
def test_prepare_wipes_checkpoints_of_another_run(tmp_path, stored):
    folder = tmp_path / "sft"
    folder.mkdir()
    if stored:
        (folder / checkpoints.KEY_FILE).write_text(stored)
    make_checkpoint(folder, 2, stored or "k")
    assert checkpoints.prepare(folder, "k") is None
    assert list(folder.glob("checkpoint-*")) == []
    assert (folder / checkpoints.KEY_FILE).read_text() == "k"

"""Atomic writes (a killed write leaves the old file or folder, the next write repairs it), permissions, JSONL
errors that name the line."""

from __future__ import annotations

import json

import pytest

from r1_pipeline.io import atomic_path, read_jsonl, write_json, write_jsonl


def test_atomic_file_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_atomic_dir_write_replaces_whole_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(ValueError):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "c").write_text("3")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["b"]


def test_folder_swap_is_one_atomic_exchange(tmp_path):
    from r1_pipeline import io

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "w").write_text("new")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w").write_text("old")
    assert io._exchange(tmp_path / "new", tmp_path / "model"), "renameat2(RENAME_EXCHANGE) unavailable"
    assert (tmp_path / "model" / "w").read_text() == "new" and (tmp_path / "new" / "w").read_text() == "old"


def test_a_killed_write_is_repaired_by_the_next_one(tmp_path):
    """Stale temporaries go; an old folder swapped out by a write killed between two renames comes back."""
    from r1_pipeline import io

    target = tmp_path / "model"
    old = io.old_path(target)
    old.mkdir()
    (old / "w").write_text("old, complete")
    (tmp_path / (io.tmp_prefix(target) + "abc")).mkdir()  # a half-written new one
    (tmp_path / (io.tmp_prefix(target) + "trainer")).mkdir()
    io.clean_stale_siblings(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (target / "w").read_text() == "old, complete"
    other = tmp_path / "model_no_traces"  # a sibling whose name starts alike is not touched
    other.mkdir()
    io.clean_stale_siblings(target)
    assert other.exists()


def test_outputs_are_world_readable(tmp_path):
    write_json(tmp_path / "m.json", {"x": 1})
    assert (tmp_path / "m.json").stat().st_mode & 0o044 == 0o044
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 1}


def test_read_jsonl_names_the_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: invalid JSON"):
        read_jsonl(p)

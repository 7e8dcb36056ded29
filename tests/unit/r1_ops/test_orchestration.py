"""r1_ops.orchestration: the workspace key that concurrency limits are keyed on (real DVC configs written by
`dvc remote add`; the limit names built on it: tests/unit/flows/test_pipeline.py), and clearing the DVC lock
entries of dead processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from r1_ops.orchestration import clear_dead_dvc_locks, workspace_key
from tests.unit.conftest import dvc


def _sleeper(**kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], **kwargs)


def test_local_remote_keys_on_host_and_checkout(checkout, tmp_path_factory):
    dvc(checkout, "remote", "add", "-d", "local", ".dvc-remote")
    other = tmp_path_factory.mktemp("other")
    assert workspace_key(checkout).startswith(socket.gethostname())
    assert workspace_key(checkout) != workspace_key(other)


def test_dead_and_zombie_dvc_lock_entries_are_cleared_live_ones_kept(tmp_path):
    """DVC's rwlock trusts psutil.pid_exists, which says yes to a zombie (a killed dvc not reaped yet)."""
    zombie = _sleeper()
    zombie.kill()
    time.sleep(0.3)  # killed, not reaped: a zombie
    gone = _sleeper()
    gone.kill()
    gone.wait()
    live = _sleeper()
    try:
        lock_dir = tmp_path / ".dvc" / "tmp"
        lock_dir.mkdir(parents=True)
        rw = {
            "write": {
                "out/a": {"pid": zombie.pid, "cmd": "dvc repro a"},
                "out/b": {"pid": live.pid, "cmd": "dvc repro b"},
            },
            "read": {
                "dep/c": [{"pid": gone.pid, "cmd": "dvc repro a"}, {"pid": live.pid, "cmd": "dvc repro b"}],
                "dep/d": [{"pid": zombie.pid, "cmd": "dvc repro a"}],
            },
        }
        (lock_dir / "rwlock").write_text(json.dumps(rw))
        removed = clear_dead_dvc_locks(tmp_path)
        assert sorted((r["mode"], r["path"], r["pid"]) for r in removed) == sorted(
            [("write", "out/a", zombie.pid), ("read", "dep/c", gone.pid), ("read", "dep/d", zombie.pid)]
        )
        assert json.loads((lock_dir / "rwlock").read_text()) == {
            "write": {"out/b": {"pid": live.pid, "cmd": "dvc repro b"}},
            "read": {"dep/c": [{"pid": live.pid, "cmd": "dvc repro b"}]},
        }
        assert clear_dead_dvc_locks(tmp_path / "elsewhere") == []  # no DVC lock file: nothing to do
    finally:
        for p in (zombie, live):
            p.kill()
            p.wait()

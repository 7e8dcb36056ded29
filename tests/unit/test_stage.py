"""r1_pipeline.stage: the relaunch through accelerate, and the process lifecycle helpers with real processes:
identity by pid + start time (alive, dead, reused), the parent watchdog killing its own process group, the flock
holder lock and its message, the parent-death signal, and the exit-2 file of relaunched ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from r1_pipeline import stage
from r1_pipeline.config import load_config
from r1_pipeline.stage import (
    HolderLock,
    ParentWatchdog,
    describe_holder,
    launch_command,
    process_alive,
    process_start_time,
)

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _sleeper(**kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], **kwargs)


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False


@linux_only
def test_process_identity_alive_dead_and_reused():
    proc = _sleeper()
    try:
        start = process_start_time(proc.pid)
        assert start is not None and start.isdigit()
        assert process_alive(proc.pid, start)
        assert process_alive(proc.pid)  # no start time given: the pid alone
        # the same pid with another start time is another process (the kernel reused the pid)
        assert not process_alive(proc.pid, str(int(start) + 1))
        proc.kill()
        time.sleep(0.2)
        # killed but not reaped yet: a zombie is not alive
        assert not process_alive(proc.pid, start)
    finally:
        proc.kill()
        proc.wait()
    assert not process_alive(proc.pid, start)
    assert process_start_time(proc.pid) is None


def test_watchdog_sees_a_live_parent_then_its_loss_and_a_reused_pid():
    parent = _sleeper()
    try:
        start = process_start_time(parent.pid)
        fired: list[str] = []
        dog = ParentWatchdog(
            "sft",
            [("the flow", parent.pid, start)],
            interval=0.05,
            on_orphan=fired.append,
            kill=lambda: fired.append("killed"),
        )
        dog.start()
        time.sleep(0.5)
        assert fired == [] and dog.thread.is_alive()  # parent alive: nothing happens
        parent.kill()
        parent.wait()
        dog.thread.join(5)
        assert fired == [f"the flow (pid {parent.pid}) is gone", "killed"]
    finally:
        parent.kill()
        parent.wait()
    me = os.getpid()
    reused = ParentWatchdog("sft", [("the flow", me, "1")], kill=lambda: None)  # our pid, another start time
    assert reused.lost() == f"the flow (pid {me}) is gone"
    assert ParentWatchdog("sft", [("the flow", me, process_start_time(me))], kill=lambda: None).lost() is None


def test_watchdog_from_env_reads_the_flow_and_the_launcher(monkeypatch):
    for name in ("R1_PARENT_PID", "R1_PARENT_START", "R1_PARENT_PGID", "R1_LAUNCHER_PID", "R1_LAUNCHER_START"):
        monkeypatch.delenv(name, raising=False)
    assert ParentWatchdog.from_env("sft") is None  # started by hand: nothing to watch
    env = stage.parent_env()
    assert env["R1_PARENT_PID"] == str(os.getpid()) and env["R1_PARENT_PGID"] == str(os.getpgrp())
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("R1_LAUNCHER_PID", "12345")
    dog = ParentWatchdog.from_env("sft")
    assert [w[:2] for w in dog.watched] == [("the flow that started it", os.getpid()), ("its launcher", 12345)]
    assert dog.parent_pgid == os.getpgrp()


def test_watchdog_kills_its_whole_process_group_and_marks_the_run(tmp_path):
    """A real orphan: a process (own session) with a child, watching a parent we kill -9."""
    parent = _sleeper()
    marker = tmp_path / "orphaned.txt"
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from r1_pipeline.stage import ParentWatchdog, process_start_time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(child.pid, flush=True)
        def mark(why):
            open({str(marker)!r}, "w").write(why)
        ParentWatchdog("sft", [("the flow", {parent.pid}, process_start_time({parent.pid}))], interval=0.2,
                       on_orphan=mark).start()
        time.sleep(120)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        grandchild = int(proc.stdout.readline())
        assert process_alive(grandchild)
        parent.kill()
        parent.wait()
        start = time.monotonic()
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert _wait_gone(grandchild, 5), "the watchdog must take its whole process group down"
        assert time.monotonic() - start < 5
        assert marker.read_text() == f"the flow (pid {parent.pid}) is gone"
        err = proc.stderr.read()
        assert f"error: sft: the flow (pid {parent.pid}) is gone: stopping this stage (process group {proc.pid})" in err
    finally:
        parent.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_watchdog_marks_the_run_although_its_stdout_pipe_is_broken(tmp_path):
    """The parent's end of the stage's stdout dies with it; MLflow's client prints "View run ... at" when it ends
    a run on a tracking server. That print must not stop the mark (it did: BrokenPipeError, run left RUNNING)."""
    parent = _sleeper()
    marker = tmp_path / "orphaned.txt"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from r1_pipeline.stage import ParentWatchdog, process_start_time
        def mark(why):
            print("View run base at: http://127.0.0.1:5000/#/experiments/1/runs/x", flush=True)
            open({str(marker)!r}, "w").write(why)
        ParentWatchdog("sft", [("the flow", {parent.pid}, process_start_time({parent.pid}))], interval=0.2,
                       on_orphan=mark).start()
        print("watching", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "watching"
        proc.stdout.close()  # the reader is gone, as the dead flow's end of the pipe is
        parent.kill()
        parent.wait()
        proc.wait(timeout=15)
        assert proc.returncode == -signal.SIGKILL
        assert marker.exists() and marker.read_text() == f"the flow (pid {parent.pid}) is gone"
    finally:
        parent.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_watchdog_on_orphan_is_bounded():
    """A hung tracking call must not keep an orphan alive: the kill comes after grace_s regardless."""
    events: list[str] = []
    dog = ParentWatchdog(
        "sft",
        [("the flow", 2**22 + 12345, None)],
        on_orphan=lambda why: time.sleep(30),
        grace_s=0.3,
        kill=lambda: events.append("killed"),
    )
    start = time.monotonic()
    dog.start()  # already lost at start: acts at once
    assert events == ["killed"] and time.monotonic() - start < 3


def test_holder_lock_is_exclusive_names_its_holder_and_survives_kill_9(tmp_path):
    path = tmp_path / ".r1" / "locks" / "sft.lock"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from r1_pipeline.stage import HolderLock, holder_info
        lock = HolderLock({str(path)!r})
        assert lock.acquire(holder_info(stage="sft"))
        print("locked", flush=True)
        time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        other = HolderLock(path)
        assert other.held()
        assert not other.acquire({"pid": os.getpid()})
        record = other.holder()
        assert record["pid"] == holder.pid and record["stage"] == "sft" and record["host"]
        text = describe_holder(record, path)
        since = time.strftime("%H:%M:%S", time.localtime(record["started"]))
        assert text.startswith(f"pid {holder.pid} since {since}, ") and "-c" in text
        holder.kill()  # kill -9: the kernel drops the flock, nothing stale is left
        holder.wait()
        assert not other.held()
        assert other.acquire({"pid": os.getpid(), "started": time.time()})
        # the dead holder's record is what the next holder finds: it did not exit cleanly
        assert other.previous["pid"] == holder.pid
        assert json.loads(path.read_text())["pid"] == os.getpid()
        other.update(lease_id="abc")
        assert json.loads(path.read_text())["lease_id"] == "abc"
        other.release()
        assert path.read_text() == ""  # a clean release leaves no record
        again = HolderLock(path)
        assert again.acquire({"pid": 1}) and again.previous is None
        again.release()
    finally:
        holder.kill()
        holder.wait()


def test_holder_lock_conflicts_within_one_process_and_after_file_replacement(tmp_path):
    path = tmp_path / "x.lock"
    a, b = HolderLock(path), HolderLock(path)
    assert a.acquire({"pid": 1})
    assert not b.acquire({"pid": 2})  # flock: separate open files conflict even in one process
    path.unlink()  # someone removed the lock file under a holder: the next one locks the new file
    assert b.acquire({"pid": 2})
    a.release()
    b.release()


def test_describe_holder_says_when_only_a_child_of_a_dead_holder_keeps_the_lock(tmp_path):
    dead = _sleeper()
    dead.kill()
    dead.wait()
    text = describe_holder({"pid": dead.pid, "started": time.time(), "command": "python -m tasks.sft"}, tmp_path / "l")
    assert "that process is gone but a child of it still holds" in text
    assert describe_holder(None, tmp_path / "l") == f"holder unknown: {tmp_path / 'l'}"


@linux_only
def test_parent_death_signal_kills_the_child_with_its_parent(tmp_path):
    """PR_SET_PDEATHSIG through preexec_fn: the middle process dies (kill -9), its child (own session) follows."""
    code = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from r1_pipeline.stage import parent_death_preexec
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                                 preexec_fn=parent_death_preexec(signal.SIGKILL))
        print(child.pid, flush=True)
        time.sleep(120)
    """)
    middle = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(middle.stdout.readline())
    try:
        assert process_alive(child)
        middle.kill()
        middle.wait()
        assert _wait_gone(child, 5)
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_rank_records_its_exit_2_for_the_launcher(tmp_path, monkeypatch):
    monkeypatch.setenv("R1_RANK_EXIT_FILE", str(tmp_path / "rank-exit"))
    assert stage._exit_permanent() == 2
    assert (tmp_path / "rank-exit").read_text().strip() == "2"
    monkeypatch.delenv("R1_RANK_EXIT_FILE")
    assert stage._exit_permanent() == 2


def test_stage_relaunches_through_accelerate_only_when_asked(monkeypatch):
    monkeypatch.delenv("R1_LAUNCHED", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = load_config(profile="micro")
    assert launch_command(cfg, "sft", []) is None
    assert launch_command(cfg, "data", []) is None
    cfg = load_config(profile="micro", overrides=["grpo.deepspeed=zero3", "grpo.num_processes=2"])
    cmd = launch_command(cfg, "grpo", ["--set", "x=1"])
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("--deepspeed_config_file") + 1].endswith("infra/deepspeed/zero3.json")
    assert cmd[-4:] == ["-m", "tasks.grpo", "--set", "x=1"]
    monkeypatch.setenv("R1_LAUNCHED", "1")
    assert launch_command(cfg, "grpo", []) is None  # already inside the launcher: no recursion


def test_a_rank_waits_for_the_others_and_takes_the_process_group_down(tmp_path):
    """Two gloo ranks: rank 1 finishes first, rank 0 is still "saving" for 1.5 s. _end_process_group holds rank 1
    until rank 0 arrives, and leaves no process group behind (a rank exiting with gloo's threads alive aborts)."""
    script = textwrap.dedent(
        """
        import sys, time
        import torch.distributed as dist
        from r1_pipeline import stage
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
        if rank == 0:
            time.sleep(1.5)
        arrived = time.time()
        stage._end_process_group()
        print(rank, arrived, time.time(), dist.is_initialized())
        """
    )
    store = tmp_path / "store"
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(r), str(store)], stdout=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]
    out = [p.communicate(timeout=60)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    (_, arrived0, _, init0), (_, _, left1, init1) = out
    assert float(left1) >= float(arrived0) - 0.05, "rank 1 left before rank 0 reached the barrier"
    assert init0 == init1 == "False"

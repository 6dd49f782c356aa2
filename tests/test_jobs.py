"""Background jobs with real processes: a small Python script written here stands in for a training run (it writes
status.json and metrics.jsonl like one, handles SIGTERM by saving and writing 'cancelled', and spawns a child so
that we can see the whole process group end)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ctllm.errors import UserError
from ctllm.jobs import JobManager, classify_failure, conflicts, parse_devices, train_command
from ctllm.jobs.processes import is_running, job_processes, parse_stat, start_ticks
from ctllm.runs import last_json_line, read_status, status_signature, tail_lines
from ctllm.settings import Settings

REPO = Path(__file__).resolve().parent.parent

FAKE_JOB = textwrap.dedent(
    '''
    """A stand-in for `python -m ctllm train`: steps until a stop file appears (or N steps), like a real run."""
    import argparse, json, os, signal, subprocess, sys, time
    from pathlib import Path

    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=1000000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--until", type=Path, help="finish once this file exists")
    parser.add_argument("--oom", action="store_true", help="crash like torch does when CUDA runs out of memory")
    parser.add_argument("--stubborn-child", action="store_true", help="the child ignores SIGTERM")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    run = args.run_dir

    def status(state, step, **extra):
        tmp = run / "status.json.tmp"
        tmp.write_text(json.dumps({"state": state, "step": step, "total_steps": args.steps, **extra}))
        os.replace(tmp, run / "status.json")

    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))

    def spawn(name, stubborn=False, own_session=False):
        """A child that sleeps: in our process group, or in its own session as torchrun starts its workers."""
        ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if stubborn else ""
        ready = run / f"{name}.ready"
        ready.unlink(missing_ok=True)
        code = f"import signal, time, pathlib; {ignore}pathlib.Path({str(ready)!r}).touch(); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=own_session)
        while not ready.exists():
            time.sleep(0.01)
        (run / f"{name}.pid").write_text(str(child.pid))

    spawn("worker", own_session=True)
    spawn("child", stubborn=args.stubborn_child)

    print("resumed" if args.resume else "fresh start", flush=True)
    print("CUDA_VISIBLE_DEVICES=" + repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
    print("stdin=" + os.readlink("/proc/self/fd/0"), "stdout=" + os.readlink("/proc/self/fd/1"), flush=True)
    status("running", 0)
    if args.oom:
        print("Traceback (most recent call last):", flush=True)
        print('  File "train.py", line 1, in <module>', flush=True)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        sys.exit(1)
    step = 0
    while step < args.steps and not (args.until and args.until.exists()):
        if stop:
            print(f"SIGTERM: checkpoint saved at step {step}", flush=True)
            status("cancelled", step)
            sys.exit(0)
        step += 1
        with open(run / "metrics.jsonl", "a") as metrics:
            metrics.write(json.dumps({"step": step, "loss": 0.693 / step}) + "\\n")
        print(f"step {step}", flush=True)
        status("running", step)
        time.sleep(args.delay)
    status("finished", step)
    print("done", flush=True)
    '''
)


@pytest.fixture
def fake_job(tmp_path: Path) -> Path:
    script = tmp_path / "fake_job.py"
    script.write_text(FAKE_JOB)
    return script


@pytest.fixture
def manager(settings: Settings):
    jobs = JobManager(settings, grace_s=5.0)
    yield jobs
    jobs.stop_watcher()
    for job in jobs.poll():  # never leave a process behind, whatever the test did
        try:
            jobs.cancel(job.id, force=True, wait=True)
        except UserError:
            pass  # it ended meanwhile


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def command(script: Path, run_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, str(script), str(run_dir), *flags]


def child_pid(run_dir: Path, name: str = "child") -> int:
    """A process the job started: 'child' (in its process group) or 'worker' (in a session of its own)."""
    path = run_dir / f"{name}.pid"
    wait_for(path.exists, what=f"the job's {name} process")
    return int(path.read_text())


def gone(pid: int) -> bool:
    """Not running any more (a zombie no one reaped yet counts as gone: it holds no memory)."""
    return not is_running(pid, None)


# ------------------------------------------------------------------------------------------------ pure parts


def test_parse_devices_and_conflicts():
    assert parse_devices("cpu") == "cpu"
    assert parse_devices(["CPU"]) == "cpu"
    assert parse_devices("1, 0") == "0,1"
    assert parse_devices([3, "cuda:1"]) == "1,3"
    assert parse_devices(2) == "2"
    with pytest.raises(UserError, match="'gpu0'"):
        parse_devices("gpu0")
    assert conflicts("0,1", "1")
    assert not conflicts("0,1", "2,3")
    assert not conflicts("cpu", "0")
    assert conflicts("cpu", "cpu")


def test_classify_failure_names_memory_and_the_fix():
    oom = "step 3\nTraceback (most recent call last):\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate"
    message = classify_failure(oom, exit_code=1)
    assert message.startswith("CUDA out of memory")
    for advice in ("LoRA", "batch", "max_length"):
        assert advice in message
    assert "CUDA out of memory" in classify_failure("RuntimeError: CUDA out of memory.")
    assert classify_failure("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried").startswith(
        "Out of CPU memory"
    )
    assert "SIGKILL" in classify_failure("step 1\nstep 2\n", exit_code=-9)
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad config key lr'
    assert (
        classify_failure(traceback, exit_code=1) == "The job failed with ValueError: bad config key lr (exit code 1)."
    )
    assert "exit code unknown" in classify_failure("step 1\n")


def test_parse_stat_survives_odd_process_names():
    line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10"
    stat = parse_stat(line)
    assert (stat.pid, stat.state, stat.ppid, stat.pgrp, stat.session, stat.start_ticks) == (
        4242,
        "S",
        1,
        4242,
        4242,
        987654,
    )
    me = parse_stat(Path("/proc/self/stat").read_text())
    assert me.pid == os.getpid() or me.ppid == os.getpid()  # /proc/self is whoever reads it


def test_run_files_are_read_tolerantly(tmp_path: Path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)) + "bar 10%\rbar 50%\rbar 90%\n")
    assert tail_lines(log, 3) == "line 4998\nline 4999\nbar 90%"
    assert tail_lines(tmp_path / "missing.log", 3) == ""
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # the last line is still being written
    assert last_json_line(metrics) == {"step": 2}
    (tmp_path / "status.json").write_text('{"state": "cancelled", "step": 7}')
    stale = status_signature(tmp_path)
    assert read_status(tmp_path) == {"state": "cancelled", "step": 7}
    assert read_status(tmp_path, stale) == {}  # a resumed job must not take the previous process's end as its own
    (tmp_path / "status.json.tmp").write_text('{"state": "running", "step": 8}')
    os.replace(tmp_path / "status.json.tmp", tmp_path / "status.json")
    assert read_status(tmp_path, stale) == {"state": "running", "step": 8}


def test_train_command_shapes():
    one = train_command("/runs/a/config.yaml")
    assert one[1:] == ["-m", "ctllm", "train", "--config", "/runs/a/config.yaml"]
    two = train_command("/runs/a/config.yaml", num_processes=2, resume=True)
    assert two[1:7] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m"]
    assert two[-4:] == ["train", "--config", "/runs/a/config.yaml", "--resume"]


# ------------------------------------------------------------------------------------------------ real processes


def test_job_runs_detached_with_output_in_its_log(manager: JobManager, fake_job: Path, tmp_path: Path):
    run_dir = tmp_path / "runs" / "demo"
    job = manager.start(command(fake_job, run_dir, "--steps", "5", "--delay", "0.01"), run_dir, devices="cpu")
    assert job.state == "running" and job.pid and job.pgid == job.pid
    assert os.getsid(job.pid) == job.pid != os.getsid(0)  # its own session and process group
    assert job.command.startswith(f"cd {REPO} && CUDA_VISIBLE_DEVICES='' ")
    done = manager.wait(job.id, timeout=60)
    assert done.state == "finished" and done.exit_code == 0 and done.error is None
    assert done.duration() is not None and done.duration() >= 0
    log = (run_dir / "train.log").read_text()
    assert f"=== ctllm job {job.id} (train 'demo') started" in log
    assert "CUDA_VISIBLE_DEVICES=''" in log
    assert "stdin=/dev/null" in log and f"stdout={run_dir / 'train.log'}" in log  # a file, never a pipe
    assert "step 5\ndone\n" in log
    view = manager.watch(job.id, lines=2)
    assert view.step == 5 and view.total_steps == 5
    assert view.metrics == {"step": 5, "loss": pytest.approx(0.693 / 5)}
    assert view.log_tail.splitlines()[0] == "done"
    assert [j.id for j in manager.list_jobs()] == [job.id]


def test_gpu_devices_become_cuda_visible_devices(manager: JobManager, fake_job: Path, tmp_path: Path):
    run_dir = tmp_path / "gpu-run"
    job = manager.start(command(fake_job, run_dir, "--steps", "1", "--delay", "0"), run_dir, devices=[3, 1])
    assert job.devices == "1,3"
    assert manager.wait(job.id, timeout=60).state == "finished"
    assert "CUDA_VISIBLE_DEVICES='1,3'" in (run_dir / "train.log").read_text()


def test_cancel_ends_the_whole_group_including_grandchildren(manager: JobManager, fake_job: Path, tmp_path: Path):
    run_dir = tmp_path / "cancel-me"
    job = manager.start(command(fake_job, run_dir, "--stubborn-child"), run_dir)
    grandchild, worker = child_pid(run_dir), child_pid(run_dir, "worker")
    wait_for(lambda: (manager.watch(job.id).step or 0) >= 2, what="two steps")
    found = job_processes(job.pgid, job.pid_start, f"CTLLM_JOB_TOKEN={job.token}")
    assert set(found.in_group) == {job.pid, grandchild} and found.outside == (worker,)
    ended = manager.cancel(job.id, grace_s=1.0, wait=True)
    assert ended.state == "cancelled" and ended.reap_deadline is None
    # The child ignored SIGTERM (SIGKILL after the grace period); the worker had left the process group.
    assert gone(job.pid) and gone(grandchild) and gone(worker)
    assert not job_processes(job.pgid, job.pid_start, f"CTLLM_JOB_TOKEN={job.token}")
    assert read_status(run_dir)["state"] == "cancelled"
    assert "SIGTERM: checkpoint saved at step" in (run_dir / "train.log").read_text()
    with pytest.raises(UserError, match="already cancelled"):
        manager.cancel(job.id)


def test_kill_9_is_reported_failed_with_the_log_tail(manager: JobManager, fake_job: Path, tmp_path: Path):
    run_dir = tmp_path / "killed"
    job = manager.start(command(fake_job, run_dir), run_dir)
    grandchild, worker = child_pid(run_dir), child_pid(run_dir, "worker")
    wait_for(lambda: (manager.watch(job.id).step or 0) >= 3, what="three steps")
    os.kill(job.pid, signal.SIGKILL)
    # Once the kernel has ended the process (a zombie of ours, not yet reaped), the very next poll reports it:
    # with the UI polling every second or two, the user sees it well within 5 s.
    wait_for(lambda: Path(f"/proc/{job.pid}/stat").read_text().split(") ")[1][0] == "Z", what="the kill")
    manager.poll()
    failed = manager.get(job.id)
    assert failed.state == "failed" and failed.exit_code == -9
    assert "SIGKILL" in failed.error
    assert "step 3" in failed.log_tail and failed.log_tail == tail_lines(run_dir / "train.log", 41).rsplit("\n", 1)[0]
    assert f"=== ctllm job {job.id} failed: The process was killed (SIGKILL)" in (run_dir / "train.log").read_text()
    # The leader's orphaned child is ended too, so the devices are really free for the next job.
    manager.wait(job.id, timeout=30, until_group_gone=True)
    assert gone(grandchild) and gone(worker)
    again = manager.start(command(fake_job, run_dir, "--steps", "1", "--delay", "0"), run_dir)
    assert manager.wait(again.id, timeout=60).state == "finished"


def test_out_of_memory_crash_says_what_to_change(manager: JobManager, fake_job: Path, tmp_path: Path):
    run_dir = tmp_path / "oom"
    job = manager.start(command(fake_job, run_dir, "--oom"), run_dir, devices="0")
    failed = manager.wait(job.id, timeout=60)
    assert failed.state == "failed" and failed.exit_code == 1
    assert failed.error.startswith("CUDA out of memory") and "LoRA" in failed.error
    assert "torch.OutOfMemoryError" in failed.log_tail


def test_same_devices_queue_and_different_devices_run_together(manager: JobManager, fake_job: Path, tmp_path: Path):
    stop = {name: tmp_path / f"stop-{name}" for name in "abcd"}
    jobs = {}
    for name, devices in (("a", "0"), ("b", "0"), ("c", "1"), ("d", "0,1")):
        run_dir = tmp_path / name
        jobs[name] = manager.start(command(fake_job, run_dir, "--until", str(stop[name])), run_dir, devices=devices)
    assert [jobs[n].state for n in "abcd"] == ["running", "queued", "running", "queued"]
    assert jobs["b"].pid is None
    stop["a"].touch()
    wait_for(lambda: manager.get(jobs["a"].id).state == "finished", what="job a to finish")
    wait_for(lambda: manager.get(jobs["b"].id).state == "running", what="job b to start")
    manager.poll()
    assert manager.get(jobs["d"].id).state == "queued"  # waits for b (device 0) and c (device 1)
    stop["c"].touch()
    wait_for(lambda: manager.get(jobs["c"].id).state == "finished", what="job c to finish")
    manager.poll()
    assert manager.get(jobs["d"].id).state == "queued"  # b still holds device 0
    stop["b"].touch()
    wait_for(lambda: manager.get(jobs["d"].id).state == "running", what="job d to start")
    with pytest.raises(UserError, match=f"already has job {jobs['d'].id}"):
        manager.start(command(fake_job, tmp_path / "d"), tmp_path / "d", devices="5")  # one job per run dir
    stop["d"].touch()
    assert manager.wait(jobs["d"].id, timeout=60).state == "finished"


START_ELSEWHERE = """
import sys
from pathlib import Path
from ctllm.jobs import JobManager
from ctllm.settings import Settings
manager = JobManager(Settings(data_dir=Path(sys.argv[1])))
job = manager.start(sys.argv[4:], sys.argv[2], devices=sys.argv[3], owner="someone")
print(job.id, job.pid)
"""


def start_in_other_process(settings: Settings, run_dir: Path, argv: list[str], devices: str = "cpu") -> tuple[int, int]:
    """Start a job from a short-lived process (an app that then exits), as the UI would before a restart."""
    out = subprocess.run(
        [sys.executable, "-c", START_ELSEWHERE, str(settings.data_dir), str(run_dir), devices, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    job_id, pid = (int(part) for part in out.split())
    return job_id, pid


def test_a_new_manager_reattaches_to_a_job_whose_starter_exited(settings: Settings, fake_job: Path, tmp_path: Path):
    run_dir = tmp_path / "survivor"
    job_id, pid = start_in_other_process(settings, run_dir, command(fake_job, run_dir))
    assert is_running(pid, None)  # the process that started it is gone; the job is not
    restarted = JobManager(settings, grace_s=5.0)
    attached = restarted.reattach()
    assert [job.id for job in attached] == [job_id] and attached[0].state == "running"
    assert attached[0].pid_start == start_ticks(pid) and attached[0].owner == "someone"
    first = wait_for(lambda: restarted.watch(job_id).step, what="a step")
    wait_for(lambda: (restarted.watch(job_id).step or 0) > first, what="more steps")  # the plots continue
    ended = restarted.cancel(job_id, wait=True)
    assert ended.state == "cancelled" and ended.exit_code is None  # not our child: its exit code is not ours to see
    assert gone(pid)


def test_reattach_reports_jobs_that_ended_while_the_app_was_down(settings: Settings, fake_job: Path, tmp_path: Path):
    finished_dir, killed_dir = tmp_path / "finished", tmp_path / "killed"
    finished_id, finished_pid = start_in_other_process(
        settings, finished_dir, command(fake_job, finished_dir, "--steps", "2", "--delay", "0"), devices="0"
    )
    killed_id, killed_pid = start_in_other_process(settings, killed_dir, command(fake_job, killed_dir))
    wait_for(lambda: read_status(killed_dir) and read_status(killed_dir)["step"] >= 2, what="two steps")
    grandchild, worker = child_pid(killed_dir), child_pid(killed_dir, "worker")
    os.kill(killed_pid, signal.SIGKILL)
    wait_for(lambda: gone(finished_pid) and gone(killed_pid), what="both processes to end")
    restarted = JobManager(settings, grace_s=1.0)
    assert restarted.reattach() == []
    finished = restarted.get(finished_id)
    assert finished.state == "finished" and finished.error is None
    killed = restarted.get(killed_id)
    assert killed.state == "failed" and "without reporting a final state" in killed.error
    assert "step 2" in killed.log_tail
    restarted.wait(killed_id, timeout=30, until_group_gone=True)
    assert gone(grandchild) and gone(worker)


def test_resume_starts_the_same_run_again_with_the_resume_flag(manager: JobManager, fake_job: Path, tmp_path: Path):
    run_dir = tmp_path / "resumable"
    stop = tmp_path / "stop"
    first = manager.start(command(fake_job, run_dir, "--until", str(stop)), run_dir, devices="2", owner="ann")
    with pytest.raises(UserError, match="only a failed or cancelled job"):
        manager.resume(first.id)
    wait_for(lambda: manager.watch(first.id).step, what="a step")
    assert manager.cancel(first.id, wait=True).state == "cancelled"
    second = manager.resume(first.id)
    assert second.id != first.id and second.resumed_from == first.id
    assert second.argv == (*first.argv, "--resume") and second.devices == "2" and second.run_dir == run_dir
    assert second.owner == "ann" and second.state == "running"
    # Until the new process writes status.json, the old 'cancelled' there is not the new job's state.
    assert manager.get(second.id).state == "running"
    stop.touch()
    assert manager.wait(second.id, timeout=60).state == "finished"
    log = (run_dir / "train.log").read_text()
    assert log.index("fresh start") < log.index(f"=== ctllm job {second.id}") < log.index("resumed")
    assert [job.id for job in manager.list_jobs()] == [second.id, first.id]


def test_cancel_of_a_queued_job_starts_nothing(manager: JobManager, fake_job: Path, tmp_path: Path):
    stop = tmp_path / "stop"
    running = manager.start(command(fake_job, tmp_path / "r1", "--until", str(stop)), tmp_path / "r1")
    queued = manager.start(command(fake_job, tmp_path / "r2"), tmp_path / "r2")
    assert queued.state == "queued"
    assert manager.cancel(queued.id).state == "cancelled"
    stop.touch()
    manager.wait(running.id, timeout=60)
    manager.poll()
    assert manager.get(queued.id).pid is None and not (tmp_path / "r2" / "train.log").exists()


def test_a_command_that_cannot_start_fails_cleanly(manager: JobManager, tmp_path: Path):
    job = manager.start(["/nonexistent/python", "-m", "ctllm"], tmp_path / "bad")
    assert job.state == "failed" and "could not start '/nonexistent/python'" in job.error
    with pytest.raises(UserError, match="kind"):
        manager.start(["true"], tmp_path / "x", kind="eval")


def test_cli_lists_shows_cancels_and_resumes(settings: Settings, fake_job: Path, tmp_path: Path, capsys):
    from ctllm.cli import main

    run_dir = tmp_path / "cli-run"
    data = ["--data-dir", str(settings.data_dir)]
    cmd = " ".join(command(fake_job, run_dir))
    assert main(["jobs", "start", "--run-dir", str(run_dir), "--cmd", cmd, "--name", "cli demo", *data]) == 0
    assert "job 1: train 'cli demo' is running" in capsys.readouterr().out
    wait_for(lambda: read_status(run_dir) and read_status(run_dir)["step"] >= 1, what="a step")
    assert main(["jobs", "list", *data]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["ID", "KIND", "STATE", "DEVICES", "STARTED", "DURATION", "NAME", "RUN", "DIR"]
    assert listing[1].split()[:4] == ["1", "train", "running", "cpu"] and listing[1].endswith(str(run_dir))
    assert main(["jobs", "show", "1", "--lines", "3", *data]) == 0
    shown = capsys.readouterr().out
    assert "progress:  step" in shown and "--- last 3 lines of" in shown
    assert main(["jobs", "cancel", "1", "--grace", "5", *data]) == 0
    assert "is cancelled" in capsys.readouterr().out
    assert main(["jobs", "resume", "1", *data]) == 0
    assert "job 2: train 'cli demo' is running" in capsys.readouterr().out
    assert main(["jobs", "cancel", "2", "--force", *data]) == 0
    capsys.readouterr()
    assert main(["jobs", "list", "--json", *data]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["state"], r["resumed_from"]) for r in records] == [(2, "cancelled", 1), (1, "cancelled", None)]
    assert main(["jobs", "show", "99", *data]) == 2
    assert "no job with id 99" in capsys.readouterr().err


def test_the_watcher_thread_notices_a_killed_job_without_anyone_polling(
    manager: JobManager, fake_job: Path, tmp_path: Path
):
    run_dir = tmp_path / "watched"
    job = manager.start(command(fake_job, run_dir), run_dir)
    child_pid(run_dir)
    watcher = manager.start_watcher(interval=0.2)
    assert manager.start_watcher() is watcher  # one per database per process
    os.kill(job.pid, signal.SIGKILL)
    # list_jobs only reads the table: the state changes because the watcher polled.
    failed = wait_for(lambda: [j for j in manager.list_jobs() if j.state == "failed"], what="the watcher")
    assert failed[0].id == job.id and failed[0].exit_code == -9 and "SIGKILL" in failed[0].error


def test_concurrent_polls_start_a_queued_job_once(settings: Settings, fake_job: Path, tmp_path: Path):
    managers = [JobManager(settings, grace_s=1.0) for _ in range(4)]
    stop = tmp_path / "stop"
    first = managers[0].start(command(fake_job, tmp_path / "one", "--until", str(stop)), tmp_path / "one")
    second = managers[0].start(command(fake_job, tmp_path / "two", "--steps", "1", "--delay", "0"), tmp_path / "two")
    assert second.state == "queued"
    stop.touch()
    wait_for(lambda: not is_running(first.pid, first.pid_start), what="the first job to end")
    threads = [threading.Thread(target=m.poll) for m in managers for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = managers[1].wait(second.id, timeout=60, until_group_gone=True)
    assert done.state == "finished"
    assert (tmp_path / "two" / "train.log").read_text().count("=== ctllm job") == 2  # one header, one footer
    managers[0].wait(first.id, timeout=60, until_group_gone=True)


@pytest.mark.slow
def test_a_real_training_run_is_cancelled_and_resumed_through_the_manager(tiny_model_dir: Path, tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", allowed_roots=(tmp_path, tiny_model_dir.parent)).ensure_dirs()
    manager = JobManager(settings, grace_s=60.0)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join((REPO / "assets" / "pairs" / "sample_pairs.jsonl").read_text().splitlines(True)[:8]))
    run_dir = settings.runs_dir / "tiny"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"run_name: tiny\noutput_dir: {run_dir}\nmodel: {tiny_model_dir}\ndata: {pairs}\neval_fraction: 0.25\n"
        "max_steps: 12\nbatch_size: 2\nmax_length: 64\nreport_to: none\nfinal_eval: false\n"
    )
    job = manager.start([*train_command(config), "--no-progress"], run_dir, devices="cpu")
    wait_for(lambda: (manager.watch(job.id).metrics or {}).get("step"), timeout=300, what="the first step")
    cancelled = manager.cancel(job.id, wait=True)
    assert cancelled.state == "cancelled" and cancelled.exit_code == 3  # the train CLI's code for a clean stop
    stopped_at = manager.watch(cancelled.id).status["step"]
    assert 1 <= stopped_at < 12 and list((run_dir / "checkpoints").glob("step-*"))
    resumed = manager.resume(job.id)
    assert resumed.argv[-1] == "--resume"
    done = manager.wait(resumed.id, timeout=300)
    assert done.state == "finished" and done.exit_code == 0, done.log_tail
    view = manager.watch(done.id)
    assert view.status["step"] == 12 and view.metrics["step"] == 12 and (run_dir / "final").is_dir()
    log = (run_dir / "train.log").read_text()
    assert log.count("step 12/12 ") == 1  # the run's logging and its redirected stderr are not doubled


RANK_WORKER = """
import os, sys, time, pathlib
run = pathlib.Path(sys.argv[1])
(run / f"rank{os.environ['RANK']}.pid").write_text(f"{os.getpid()} {os.environ['WORLD_SIZE']}")
time.sleep(600)
"""


@pytest.mark.slow
def test_accelerate_workers_in_their_own_sessions_end_with_the_job(manager: JobManager, tmp_path: Path):
    """torchrun (under `accelerate launch`) starts each rank in a session of its own, out of reach of a signal to
    the launcher's group: when the launcher is killed -9 the ranks must still be ended (GPU memory, #9319)."""
    worker = tmp_path / "rank_worker.py"
    worker.write_text(RANK_WORKER)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", str(worker)]

    def start_ranks(run_dir: Path) -> tuple[int, list[int]]:
        job = manager.start([*launch, str(run_dir)], run_dir, devices="0,1")
        files = [run_dir / f"rank{rank}.pid" for rank in (0, 1)]
        wait_for(lambda: all(f.exists() and f.read_text() for f in files), timeout=120, what="both ranks")
        ranks = [tuple(int(x) for x in f.read_text().split()) for f in files]
        assert [world for _, world in ranks] == [2, 2]  # two processes really ran (see DESIGN: --cpu gives one)
        pids = [pid for pid, _ in ranks]
        assert all(os.getsid(pid) == pid for pid in pids)  # the case this test is about
        return job.id, pids

    cancelled_id, ranks = start_ranks(tmp_path / "cancelled")
    assert manager.cancel(cancelled_id, grace_s=20.0, wait=True).state == "cancelled"
    assert all(gone(pid) for pid in ranks)

    killed_id, ranks = start_ranks(tmp_path / "killed")
    os.kill(manager.get(killed_id).pid, signal.SIGKILL)
    assert manager.wait(killed_id, timeout=60).state == "failed"
    manager.wait(killed_id, timeout=60, until_group_gone=True)
    assert all(gone(pid) for pid in ranks)

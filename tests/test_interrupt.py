"""fairseq_headless.data.interrupt: a stopped preparation ends with one line and resumes to the same files.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from fairseq_headless.cli import InputError
from fairseq_headless.data import prepare
from helpers.data_prep import (  # noqa: F401 (fixtures among them)
    EN, make_documents, documents_text, run_ok)


# ---------------------------------------------------------------- stopped runs

STOPPED_RUN_OPTIONS = ["--vocab-size", 60, "--workers", 2, "--valid-lines", 6, "--test-lines", 4]


@pytest.fixture(scope="module")
def stop_corpus(tmp_path_factory):
    """Three files, so that each pass runs three units in a pool of two workers."""
    folder = tmp_path_factory.mktemp("stop") / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"part{i}.txt").write_text(documents_text(make_documents(EN, 25, seed=20 + i)), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(stop_corpus, tmp_path_factory):
    """shards -> the files of an uninterrupted run with STOPPED_RUN_OPTIONS."""
    root = tmp_path_factory.mktemp("uninterrupted")
    outputs = {}
    for shards in (1, 2):
        out = root / f"out{shards}"
        run_ok(["--input", stop_corpus, "--output", out, "--shards", shards] + STOPPED_RUN_OPTIONS)
        outputs[shards] = folder_files(out)
    return outputs


def folder_files(folder: Path) -> dict:
    """Relative path -> content of every file below `folder`, the run's timestamps left out (manifest.json's
    creation time, the stage markers' clock and the passes' seconds)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name in ("manifest.json", "shard.json", "scan.json"):
                record = json.loads(data.decode().replace(str(folder), "OUT"))  # the command names the folder
                for clock in ("created", "seconds", "started", "finished"):
                    record.pop(clock, None)
                    record.get("result", {}).pop(clock, None)
                data = json.dumps(record, sort_keys=True).encode()
            files[path.relative_to(folder).as_posix()] = data
    return files


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds `text` (the killed run's workers carry its command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


# shards -> the stops of one preparation, stopped and run again at each stage in turn: every stage of both kinds
# of run, and every signal (Slurm at --time sends SIGTERM, Ctrl-C SIGINT, to the workers too: "to the group")
STOPS = {1: [("scan", "SIGKILL"), ("tokenizer", "SIGINT"), ("encode0", "SIGTERM to the group")],
         2: [("scan", "SIGINT to the group"), ("tokenizer", "SIGKILL"), ("encode0", "SIGKILL"), ("encode1", "SIGTERM")]}


def stop_at(command, out, tmp_path, stage, signame):
    """A real prepare_data.py process, paused at `stage` by the test hook (interrupt.pause_for_tests) and sent
    `signame`; returns its messages (stderr), once it and its workers are gone."""
    from fairseq_headless.data import interrupt

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    paused = tmp_path / f"paused-{stage}"
    signame, _, group = signame.partition(" to the ")
    with subprocess.Popen(command, env={**env, interrupt.PAUSE_VARIABLE: f"{stage}:{paused}"}, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for _ in range(600):
            if paused.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert paused.exists(), proc.communicate()
        if group:
            assert len(processes_naming(str(out))) > 1  # the workers are there to receive it
            os.killpg(proc.pid, getattr(signal, signame))
        else:
            proc.send_signal(getattr(signal, signame))
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a run that hangs on its way out: fail, and leave no process behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    paused.unlink()
    signum = getattr(signal, signame)
    if signame == "SIGKILL":
        assert proc.returncode == -signum
    else:  # one line, the last, and the status a shell gives a process the signal ended
        assert proc.returncode == 128 + signum
        assert err.splitlines()[-1] == f"interrupted ({signame}): run the same command to resume", err
        assert "Traceback" not in err and "error: " not in err
        assert not list(tmp_path.rglob("*.tmp-*"))  # its own temporaries removed on the way out
    for _ in range(100):  # the pool's workers end with the run (SIGKILL: the kernel kills them with it)
        if not processes_naming(str(out)):
            break
        time.sleep(0.1)
    assert not processes_naming(str(out))
    left = [p.name for p in tmp_path.rglob("*.tmp-*")]
    if signame == "SIGKILL" and stage.startswith("encode"):
        assert left == [f"shard{stage[-1]}.tmp-{socket.gethostname()}-{proc.pid}"]  # what the rerun must remove
    return err


@pytest.mark.parametrize("shards", sorted(STOPS))
def test_a_stopped_run_resumes_to_the_same_files(stop_corpus, uninterrupted, tmp_path, shards):
    """Stopped at each stage in turn, each run resuming what the last one kept; then run to the end."""
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--input", str(stop_corpus), "--output",
               str(out), "--shards", str(shards), *map(str, STOPPED_RUN_OPTIONS)]
    previous = None
    for stage, signame in STOPS[shards]:
        log = stop_at(command, out, tmp_path, stage, signame)
        if previous not in (None, "scan"):  # the kept scan is taken, and after a tokenizer the tokenizer
            assert "reusing the scan" in log
        if previous is not None and previous.startswith("encode"):
            assert "reusing the tokenizer" in log and "training a sentencepiece" not in log
        previous = stage
    rerun = run_ok(command[2:])  # in-process: the same code, one start-up less
    assert "reusing the scan" in rerun and "reusing the tokenizer" in rerun
    assert "training a sentencepiece" not in rerun
    if shards == 2:
        assert "shard 0: finished before" in rerun
    assert folder_files(out) == uninterrupted[shards]
    assert not list(tmp_path.rglob("*.tmp-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # out.partial included


def test_stale_temporaries_are_those_of_dead_processes(tmp_path):
    """A temporary of a live process stays, of a dead one goes; another machine's cannot be asked, so in a
    sharded folder (shared by the tasks of an array) it goes only once the preparation is finished."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    names = {"dead": f"shard1.tmp-{host}-{dead}", "live": f"shard2.tmp-{host}-{os.getppid()}",
             "elsewhere": f"tokenizer.tmp-other-host-{dead}", "written": f".scan.{dead}-0a1b2c3d.tmp.json",
             "kept": "shard0"}
    for shared, finished, expected in ((False, False, {"live", "kept"}), (True, False, {"live", "elsewhere", "kept",
                                                                                     "written"}),
                                       (True, True, {"live", "kept", "written"})):
        folder = tmp_path / f"{shared}-{finished}"
        for key, name in names.items():
            (folder / name).mkdir(parents=True) if "json" not in name else (folder / name).write_text("{")
        in_shard = folder / "shard0" / f".dict.{dead}-0a1b2c3d.tmp.txt"  # a dictionary cut short by SIGKILL
        in_shard.write_text("1")
        prepare._remove_stale_temporaries(folder, shared, finished)
        assert sorted(p.name for p in folder.iterdir()) == sorted(names[k] for k in expected), (shared, finished)
        assert in_shard.exists() == shared  # a shared folder's files may be another machine's task's


def test_a_shard_being_made_by_a_live_process_is_not_taken(tmp_path):
    """Two runs of one shard on one machine (a requeued array task beside the old one): the second stops with
    one line and removes nothing; what a dead run left is removed."""
    from fairseq_headless.cli import InputError

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    (tmp_path / f"shard1.tmp-{host}-{dead}").mkdir()
    prepare._claim(tmp_path, "shard1")
    assert not list(tmp_path.iterdir())
    live = tmp_path / f"shard1.tmp-{host}-{os.getppid()}"  # a live process other than this one
    live.mkdir()
    with pytest.raises(InputError, match=rf"shard1 is being prepared by process {os.getppid()} on this machine"):
        prepare._claim(tmp_path, "shard1")
    assert live.is_dir()

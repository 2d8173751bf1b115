"""The demo's equal compute (fairseq_headless/experiments/cpu_budget.py): a CPU-time budget per training run.

One training runs alone on one core, the same training runs again with a busy loop sharing its core: the
budget must give both the same CPU seconds (and so, for the same config, about the same updates) although
the loaded one takes longer on the wall clock.
"""

import os
import subprocess
import sys

import pytest

from fairseq_headless.experiments import cpu_budget
from fairseq_headless.experiments.cpu_budget import CpuBudget, start_run
from fairseq_headless.experiments.demo import parse_training_log, train_command
from fairseq_headless.experiments.training_runs import CPU_OVERRIDES, POLL_S

# CPU seconds per run: ~6 of them start-up (imports, data; more on a slower CPU), the rest tens of tiny updates
BUDGET_S = 15.0
# Two runs' CPU seconds differ by the stop's latency (a poll, POLL_S, and the update under way, ~0.06 s
# here) on each, plus the spread of the final validation and save and of the start-up (~0.2 s measured).
CPU_TOLERANCE_S = 2 * (POLL_S + 0.1) + 0.3


def busy_loop():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def budgeted_run(data, save_dir, loaded: bool):
    """hmlm_tiny stopped after BUDGET_S CPU seconds, pinned to the test's one core (with a busy loop there if
    ``loaded``): (FinishedRun, stop, the busy loop's CPU seconds or None)."""
    spinner = busy_loop() if loaded else None
    try:
        command = train_command("hmlm_tiny", data, save_dir, 100_000,
                                [*CPU_OVERRIDES, "common.log_interval=5", "dataset.batch_size=8"])
        run = start_run(command, save_dir / "train.log")
        budget = CpuBudget({"run": run}, BUDGET_S)
        finished = run.wait("run", on_poll=budget.poll).check("hmlm_tiny")
        spun = cpu_budget.process_tree_cpu_seconds(spinner.pid) if spinner is not None else None
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return finished, budget.stop("run"), spun


@pytest.fixture
def one_core():
    """The test and its children (the trainings, the busy loop) on one core: the loop takes half of it."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.fail("needs os.sched_setaffinity (Linux) to share one core with the busy loop")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    yield
    os.sched_setaffinity(0, before)


def test_equal_cpu_seconds_under_a_busy_loop(tiny_data, tmp_path, one_core):
    quiet, quiet_stop, _ = budgeted_run(tiny_data, tmp_path / "quiet", loaded=False)
    loaded, loaded_stop, spun = budgeted_run(tiny_data, tmp_path / "loaded", loaded=True)
    # the kernel's own count (os.wait4), to the end (final validation and save included)
    assert abs(quiet.cpu_s - loaded.cpu_s) <= CPU_TOLERANCE_S, (quiet.cpu_s, loaded.cpu_s)
    for finished, stop in ((quiet, quiet_stop), (loaded, loaded_stop)):
        # the stop was requested at the budget (a /proc reading one poll late at most) ...
        assert BUDGET_S <= stop["cpu_s"] <= BUDGET_S + 1.0
        # ... and fairseq stopped itself after the update under way, through its own max_update path
        assert f"Stopping training due to num_updates: {stop['update'] + 1} >= max_update" in finished.output \
            or f"Stopping training due to num_updates: {stop['update']} >= max_update" in finished.output
        assert (finished.log_path.parent / "checkpoint_last.pt").is_file()
        assert finished.cpu_s >= stop["cpu_s"]
    # the load was real: the busy loop computed on the run's core about half of the loaded run's wall time (a
    # quarter at least, should a neighbour share the core too). Not a ratio of the two runs' wall times, which a
    # neighbour's load on the quiet run alone would change.
    assert spun >= 0.25 * loaded.seconds, (spun, loaded.seconds)
    # both trained, the loaded run for at least half the quiet run's updates (a wall-clock budget would give it about
    # half). Not equal updates: a CPU second on a core shared with a busy loop does fewer of them, its caches
    # refilled after every switch; measured 0.98 and 0.70 of the quiet run's (81 vs 79, 156 vs 109 updates)
    updates = [parse_training_log(f.output)["updates"] for f in (quiet, loaded)]
    assert updates[1] >= 0.5 * updates[0] and min(updates) >= 5, updates


def test_the_stop_finds_fairseqs_training_loop():
    """What request_stop assumes of fairseq_cli/train.py: ``main`` holds ``cfg`` and ``trainer`` as locals, and
    ``validate_and_save`` reads ``cfg.optimization.max_update`` (with ``or math.inf``) at every update."""
    import inspect

    import fairseq_cli.train as fairseq_train

    assert {"cfg", "trainer"} <= set(fairseq_train.main.__code__.co_varnames)
    source = inspect.getsource(fairseq_train.validate_and_save)
    assert "max_update = cfg.optimization.max_update or math.inf" in source
    assert "if num_updates >= max_update:" in source


def test_request_stop_sets_max_update_on_the_stack():
    """A fake fairseq frame: the handler's walk finds its cfg and trainer and sets max_update (1 at least)."""
    from types import SimpleNamespace

    for done, expected in ((42, 42), (0, 1)):
        cfg = SimpleNamespace(optimization=SimpleNamespace(max_update=10**6))
        trainer = SimpleNamespace(get_num_updates=lambda done=done: done)
        namespace = {"__name__": "fairseq_cli.train"}
        exec("def main(cfg, trainer):\n    import sys\n    return inner(sys._getframe())", namespace)
        namespace["inner"] = lambda frame: cpu_budget.request_stop(frame)
        assert namespace["main"](cfg, trainer) == done
        assert cfg.optimization.max_update == expected
    assert cpu_budget.request_stop(sys._getframe()) is None  # not in a fairseq training: nothing to stop


def test_cpu_seconds_of_a_process_tree():
    """A busy child under a sleeping parent: the tree's CPU seconds grow with the child's, the count is /proc's."""
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
                               "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.5: pass']);"
                               " c.wait(); time.sleep(30)"])
    try:
        import time

        deadline = time.time() + 30
        seconds = 0.0
        while time.time() < deadline and seconds < 1.5:
            seconds = cpu_budget.process_tree_cpu_seconds(parent.pid)
            time.sleep(0.1)
        # the child spun 1.5 CPU s by its own clock; the parent's start-up adds its own few tenths
        assert 1.5 <= seconds <= 1.5 + 1.5, seconds
    finally:
        parent.kill()
        parent.wait()
    assert cpu_budget.process_tree_cpu_seconds(parent.pid) is None


def test_the_callback_handles_the_signal_during_the_job_only():
    """on_job_start installs the handler; on_job_end ignores the signal, so a late request cannot kill the exit."""
    import signal

    before = signal.getsignal(cpu_budget.STOP_SIGNAL)
    try:
        callback = cpu_budget.StopOnSignal()
        callback.on_job_start(config=None)
        assert signal.getsignal(cpu_budget.STOP_SIGNAL) is cpu_budget._on_stop_signal
        os.kill(os.getpid(), cpu_budget.STOP_SIGNAL)  # no fairseq training on this stack: nothing happens
        callback.on_job_end(config=None)
        assert signal.getsignal(cpu_budget.STOP_SIGNAL) == signal.SIG_IGN
        os.kill(os.getpid(), cpu_budget.STOP_SIGNAL)
    finally:
        signal.signal(cpu_budget.STOP_SIGNAL, before)


def test_a_run_without_the_handler_is_killed_with_an_error(tmp_path, monkeypatch):
    """A run started for a budget but without the StopOnSignal callback (it never answers; start_run has it ignore
    the signal): killed once it computed ACK_TIMEOUT_CPU_S past its budget, with one error line naming the
    override it needs."""
    monkeypatch.setattr(cpu_budget, "ACK_TIMEOUT_CPU_S", 0.5)
    run = start_run([sys.executable, "-c", "while True: pass"], tmp_path / "train.log")
    budget = CpuBudget({"spinner": run}, 0.3)
    with pytest.raises(cpu_budget.BudgetError, match=r"spinner: no answer .* needs the override \+hydra\.callbacks"):
        run.wait("spinner", on_poll=budget.poll)
    assert run.proc.poll() is not None  # killed, not left spinning
    # it was asked: at the budget, by the supervisor's /proc reading
    assert 0.3 <= budget.cpu["spinner"] <= 0.3 + 0.5 + 1.0


def test_an_early_request_is_survived_and_an_acknowledged_stop_is_recorded(tmp_path):
    """A stand-in run that computes 1.5 CPU s before it installs its handler, as a training imports fairseq
    before hydra calls StopOnSignal: the requests sent meanwhile (budget 0.3 s) do not end it. Then it
    acknowledges as the handler does and exits at once (before a poll reads its answer): its stop is still
    recorded."""
    answer = ("import os, signal, sys, time\n"
              "t = time.process_time()\n"
              "while time.process_time() - t < 1.5: pass\n"
              "def stop(signum, frame):\n"
              f"    os.write(2, b'{cpu_budget.ACK} 17 (test)\\n')\n"
              "    sys.exit(0)\n"
              "signal.signal(signal.SIGUSR1, stop)\n"
              "while True: pass")
    run = start_run([sys.executable, "-c", answer], tmp_path / "train.log")
    budget = CpuBudget({"stand-in": run}, 0.3)
    finished = run.wait("stand-in", on_poll=budget.poll).check("stand-in")
    stop = budget.stop("stand-in")
    assert stop["update"] == 17 and 0.3 <= stop["cpu_s"] <= finished.cpu_s
    assert 0 < stop["wall_s"] <= finished.seconds

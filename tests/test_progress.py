"""fairseq_headless.progress: without a terminal, a log line every interval and one at the end."""
from __future__ import annotations

from fairseq_headless.progress import Progress


def counted(what, total, now, **kwargs):
    lines = []
    return Progress(what, total, interval=30, log=lines.append, terminal=False, clock=lambda: now[0], **kwargs), lines


def test_bytes_a_line_every_interval():
    """A pass over the corpus (data/prepare.py): MB read, the tokens written as its status, MB/s and the time left."""
    now = [0.0]
    progress, lines = counted("encoding", 100_000_000, now)
    progress.update(10_000_000)
    progress.report("1,234 tokens written")
    now[0] = 29.0
    progress.update(0)
    assert lines == []
    now[0] = 30.0
    progress.update(0)
    assert lines == ["encoding: 10.0 of 100.0 MB read (10%), 1,234 tokens written, 0.33 MB/s, ETA 0:04:30"]
    progress.update(0)
    assert len(lines) == 1  # the next one 30 s later
    now[0] = 60.0
    progress.update(40_000_000)
    assert lines[-1] == "encoding: 50.0 of 100.0 MB read (50%), 1,234 tokens written, 0.83 MB/s, ETA 0:01:00"
    assert progress.close() == 60.0 and len(lines) == 2  # the last line already had this count


def test_parts_lines_and_the_last_one():
    """The speed benchmark's parts: its own messages, a line every interval, one at the end, no bar."""
    now = [0.0]
    parts, lines = counted("benchmark", 4, now, unit="part")
    parts.write("training steps: 4 groups")
    parts.report("bert-tiny V=300 batch 2")
    now[0] = 12.0
    parts.update()
    assert lines == ["training steps: 4 groups"]  # 12 s: not yet
    now[0] = 31.0
    parts.report("bert-tiny V=300 batch 4")
    assert lines[-1] == "benchmark: 1/4 parts (25%), bert-tiny V=300 batch 4, 0:00:31 elapsed, ETA 0:01:33"
    now[0] = 40.0
    parts.update(2)
    now[0] = 45.0
    parts.update()
    assert len(lines) == 2  # 14 s after the last line
    parts.close()
    assert lines[-1] == "benchmark: 4/4 parts (100%), bert-tiny V=300 batch 4, 0:00:45 elapsed, ETA 0:00:00"
    assert len(lines) == 3 and not any("\r" in line for line in lines)


def test_transient_counts_log_only_when_they_outlast_an_interval():
    """Fine-tuning's epochs and evaluations (evaluation/finetune.EpochProgress): a short one adds no line to the
    log, a long one its lines every interval and its last."""
    now = [0.0]
    short, lines = counted("SST-2 epoch 1/3", 3, now, unit="step", transient=True)
    for t in (5.0, 10.0, 15.0):
        now[0] = t
        short.update()
    short.close()
    assert lines == []
    long, lines = counted("MNLI epoch 1/3", 3, now, unit="step", transient=True)
    for t in (50.0, 70.0, 75.0):  # 35 s after its start: a line; then 20 s, 25 s after it: none until the end
        now[0] = t
        long.update()
    long.close()
    assert lines == ["MNLI epoch 1/3: 1/3 steps (33%), 0:00:35 elapsed, ETA 0:01:10",
                     "MNLI epoch 1/3: 3/3 steps (100%), 0:01:00 elapsed, ETA 0:00:00"]

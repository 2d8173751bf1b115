"""The one command-line convention (fairseq_headless/cli.py): one ``error:`` line and status 2."""
import logging
import os
import sys

import pytest

from fairseq_headless import cli
from fairseq_headless.cli import InputError, Parser, run


def _main(argv):
    parser = Parser(prog="x")
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args(argv)
    if args.n < 0:
        raise InputError("--n must be 0 or more")
    return args.n


@pytest.mark.parametrize("argv, status, message", [
    (["--n", "3"], 3, None),
    (["--n", "-1"], 2, "error: --n must be 0 or more\n"),
    (["--m"], 2, "error: the following arguments are required: --n (see --help)\n"),
])
def test_run_maps_input_errors_to_one_line_and_status_2(capsys, argv, status, message):
    assert run(_main, argv) == status
    err = capsys.readouterr().err
    assert err == (message or "")


def test_failures_are_status_1_and_bugs_keep_their_traceback(capsys):
    def failed(argv):
        raise cli.Failure("the training crashed; see train.log")

    assert run(failed, []) == 1 and capsys.readouterr().err == "error: the training crashed; see train.log\n"
    with pytest.raises(ZeroDivisionError):
        run(lambda argv: 1 / 0, [])


def test_run_shows_the_package_messages_on_stderr(capsys):
    log = logging.getLogger("fairseq_headless.example")

    def main(argv):
        log.info("scanned 3 lines")
        log.warning("2 lines dropped")
        log.debug("not shown")

    assert run(main, []) == 0
    assert capsys.readouterr() == ("", "scanned 3 lines\nwarning: 2 lines dropped\n")
    log.info("after the run: not shown")
    assert capsys.readouterr().err == ""



@pytest.fixture
def writes(monkeypatch):
    """Every os.write call, as (fd, bytes), while the test runs."""
    calls, real_write = [], os.write

    def recording_write(fd, data):
        calls.append((fd, bytes(data)))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    return calls


def test_an_error_line_is_one_write_with_its_newline(writes):
    """Ranks of one job print into one stderr: a line written in two parts (text, then newline) can be cut by
    another rank's. The line reaches the file descriptor in one write(2), after what the stream held."""
    read, write = os.pipe()
    with os.fdopen(write, "w", encoding="utf-8") as stream:
        stream.write("pending ")  # buffered in the stream: it must come first
        cli.write_line("error: naïve rank 1", stream)
        line_writes = [call for call in writes if call[1] != b"pending "]
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == "pending error: naïve rank 1\n".encode()
    assert line_writes == [(write, "error: naïve rank 1\n".encode())]


def test_run_writes_its_error_line_in_one_write(writes, capfd):
    assert run(_main, ["--n", "-1"]) == 2
    assert [call for call in writes if call[0] == sys.stderr.fileno()] == [
        (sys.stderr.fileno(), b"error: --n must be 0 or more\n")]
    assert capfd.readouterr().err == "error: --n must be 0 or more\n"


def test_code_tests_and_help_texts_cite_no_internal_issue_numbers():
    """What a reader cannot look up says nothing: code and --help say why; history is in the commit messages."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cited = re.compile(r"\bissues? #?[0-9]+", re.IGNORECASE)
    found = [f"{path.relative_to(repo)}:{number}: {line.strip()}"
             for folder in ("fairseq_headless", "studies", "scripts", "tests") for path in sorted((repo / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if cited.search(line)]
    assert not found, "\n".join(found)

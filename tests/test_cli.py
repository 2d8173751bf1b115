"""The one command-line convention (fairseq_headless/cli.py): one ``error:`` line and status 2."""
import pytest

from fairseq_headless.cli import InputError, Parser, run
from fairseq_headless.data.errors import DataError
from fairseq_headless.evaluation.errors import EvaluationInputError


def _main(argv):
    parser = Parser(prog="x")
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args(argv)
    if args.n < 0:
        raise DataError("--n must be 0 or more")
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


def test_stage_errors_are_input_errors_and_bugs_keep_their_traceback():
    assert issubclass(DataError, InputError) and issubclass(EvaluationInputError, ValueError)
    assert issubclass(EvaluationInputError, InputError)
    with pytest.raises(ZeroDivisionError):
        run(lambda argv: 1 / 0, [])


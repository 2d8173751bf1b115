"""Every file the project writes has the mode a plain open() gives under the user's umask (and every folder a
plain mkdir's): exports, data folders, checkpoints, results, plots, fine-tuning checkpoints are read by
colleagues on shared filesystems. Libraries that write through a temporary file (safetensors) leave 0o600.

Under umask 0o027 the plain modes are 0o640 and 0o750: a file left 0o600 by a temporary file and one forced to
0o644 both show."""
import os
import stat
from pathlib import Path

import matplotlib
import pytest

from fairseq.file_io import PathManager
from fairseq_headless.evaluation.cli import suite_main
from studies.demo.downstream import random_init_copy
from fairseq_headless.files import save_figure_atomic, write_json_atomic, write_text_atomic
from helpers.export import prepare, run, save_checkpoint
from test_evaluation_helpers import write_glue

matplotlib.use("Agg")
MASK = 0o027


@pytest.fixture
def umask():
    old = os.umask(MASK)  # inherited by the subprocesses (prepare_data.py)
    yield
    os.umask(old)


def modes(folder: Path) -> dict:
    """{path relative to `folder`: permission bits} of everything under it."""
    found = {}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(parent, name)
            found[str(path.relative_to(folder))] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_every_writer_leaves_plain_modes(umask, tmp_path):
    import matplotlib.pyplot as plt

    outputs = {}
    (tmp_path / "corpus").mkdir()
    data = prepare(tmp_path / "corpus")  # scripts/prepare_data.py: tokenizer, binarized splits, manifest
    outputs["data folder"] = data
    saves = tmp_path / "save"
    saves.mkdir()
    save_checkpoint("hmlm_tiny", data, saves / "checkpoint_last.pt")  # fairseq's own writer
    PathManager.copy(str(saves / "checkpoint_last.pt"), str(saves / "checkpoint_best.pt"))  # fairseq's copies
    outputs["checkpoints"] = saves
    save_checkpoint("hlm_tiny", data, tmp_path / "decoder.pt")
    for name, checkpoint in (("encoder export", saves / "checkpoint_best.pt"), ("decoder export", tmp_path / "decoder.pt")):
        outputs[name] = tmp_path / name.replace(" ", "_")
        assert run("--checkpoint", checkpoint, "--output", outputs[name]) == 0
    outputs["control model"] = random_init_copy(outputs["encoder export"], tmp_path / "control")
    glue = write_glue(tmp_path / "glue", n_train=16, n_dev=16)
    outputs["fine-tuning results"] = tmp_path / "glue_results"  # results JSON, markdown, plot, Trainer checkpoints
    assert suite_main(["--model", str(outputs["encoder export"]), "--output", str(outputs["fine-tuning results"]),
                       "--data-dir", str(glue), "--tasks", "SST-2", "--seeds", "1", "--epochs", "1",
                       "--batch-size", "16", "--threads", "1", "--keep-checkpoints"], "glue") == 0
    results = outputs["results"] = tmp_path / "results"
    write_json_atomic(results / "a.json", {"x": 1})
    write_text_atomic(results / "a.md", "x\n")
    fig = plt.figure()
    save_figure_atomic(fig, results / "a.png")

    expected = {"file": 0o666 & ~MASK, "folder": 0o777 & ~MASK}
    wrong = {}
    for name, folder in outputs.items():
        found = modes(folder)
        assert found, name
        if name.endswith("export"):
            assert "model.safetensors" in found, name
        if name == "fine-tuning results":
            assert any(path.endswith("model.safetensors") and "checkpoint-" in path for path in found)
        found["."] = stat.S_IMODE(os.stat(folder).st_mode)
        for path, mode in found.items():
            kind = "folder" if (folder / path).is_dir() else "file"
            if mode != expected[kind]:
                wrong[f"{name}: {path}"] = oct(mode)
    assert not wrong, f"expected {oct(expected['file'])} (files), {oct(expected['folder'])} (folders): {wrong}"

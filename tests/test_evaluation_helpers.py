"""Fixtures of the evaluation tests: tiny HF RoBERTa folders and benchmark files in each layout.

Imported by the other tests/test_evaluation_*.py files (like conftest's helpers); the
tests at the bottom check the fixtures themselves, so that a broken fixture fails here
and not as a puzzling error elsewhere.
"""
import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "nice", "happy", "bright", "warm", "kind"]
NEGATIVE = ["bad", "awful", "poor", "sad", "dark", "cold", "cruel", "grim"]
FILLER = ["the", "a", "movie", "film", "story", "was", "is", "very", "really", "plot", "actor", "scene",
          "quite", "rather", "and", "it", "this", "that", "man", "woman", "book", "river", "bank", "went"]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # fairseq's order: <s>=0 <pad>=1 </s>=2 <unk>=3


def sentence(rng: random.Random, polar: str = None, length: int = 6) -> str:
    words = [rng.choice(FILLER) for _ in range(length)]
    if polar:
        words.insert(rng.randrange(len(words) + 1), polar)
    return " ".join(words)


def polar_sentences(n: int, seed: int) -> list:
    """(sentence, label): label 1 iff the sentence holds a POSITIVE word (else a NEGATIVE one)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        out.append((sentence(rng, rng.choice(POSITIVE if label else NEGATIVE)), label))
    rng.shuffle(out)
    return out


def make_tokenizer(path: Path):
    """A WordLevel tokenizer over the fixture vocabulary with RoBERTa's <s> a </s></s> b </s> template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(POSITIVE + NEGATIVE + FILLER)) + list(".,*?"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    fast.save_pretrained(path)
    return fast


def make_model(path: Path, kind: str = "headless", hidden: int = 32, seed: int = 0) -> Path:
    """A random tiny RoBERTa folder laid out as scripts/convert_to_hf.py writes one: `headless` = the
    `headless_roberta` model type (e^T, no head; its modeling file and auto_map), `vanilla` = RobertaForMaskedLM."""
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    from fairseq_headless.export.convert import save_model
    from fairseq_headless.export.modeling_headless_roberta import HeadlessRobertaConfig, HeadlessRobertaForMaskedLM

    path = Path(path)
    tokenizer = make_tokenizer(path)
    shape = dict(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=2 * hidden, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                 eos_token_id=2, type_vocab_size=1)
    torch.manual_seed(seed)
    if kind == "headless":
        model = HeadlessRobertaForMaskedLM(HeadlessRobertaConfig(**shape, never_predicted=tokenizer.all_special_ids))
    else:
        model = RobertaForMaskedLM(RobertaConfig(**shape))
    save_model(model, path)
    return path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _tsv(path: Path, header, rows) -> None:
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(v) for v in r) for r in rows]
    _write(path, "\n".join(lines) + "\n")


def _jsonl(path: Path, rows) -> None:
    _write(path, "".join(json.dumps(r) + "\n" for r in rows))


MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
NLI = ["entailment", "neutral", "contradiction"]


def write_glue(root: Path, n_train: int = 64, n_dev: int = 32, seed: int = 0) -> Path:
    """All 8 GLUE tasks in GLUE's original layout, each with its own columns and label strings.

    Every task is learnable from one word: the polarity of the (second) sentence.
    """
    root = Path(root)
    for split, n, s in (("train", n_train, seed), ("dev", n_dev, seed + 1)):
        data = polar_sentences(n, s)
        rng = random.Random(s + 100)
        pairs = [(sentence(rng), text, label) for text, label in data]
        _tsv(root / "CoLA" / f"{split}.tsv", None,
             [("gj04", label, "" if label else "*", text) for text, label in data])
        _tsv(root / "SST-2" / f"{split}.tsv", ["sentence", "label"], [(t, y) for t, y in data])
        _tsv(root / "MRPC" / f"{split}.tsv", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             [(y, 100 + i, 200 + i, a, b) for i, (a, b, y) in enumerate(pairs)])
        _tsv(root / "STS-B" / f"{split}.tsv",
             ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"],
             [(i, "main-news", "f", "2012", i, "s", "s", a, b, f"{4.0 * y + 0.5:.3f}")
              for i, (a, b, y) in enumerate(pairs)])
        _tsv(root / "QQP" / f"{split}.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
             [(i, 2 * i, 2 * i + 1, a, b, y) for i, (a, b, y) in enumerate(pairs)])
        nli = [(a, b, "entailment" if y else "contradiction") for a, b, y in pairs]
        mnli_rows = [(i, i, f"{i}e", "fiction", "(", "(", "(", "(", a, b, y, y) for i, (a, b, y) in enumerate(nli)]
        if split == "train":
            _tsv(root / "MNLI" / "train.tsv", MNLI_HEADER, mnli_rows)
        else:  # dev files carry label1..label5 before gold_label
            header = MNLI_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
            half = len(mnli_rows) // 2
            for name, rows in (("dev_matched.tsv", mnli_rows[:half]), ("dev_mismatched.tsv", mnli_rows[half:])):
                _tsv(root / "MNLI" / name, header, [r[:-1] + (r[-1],) * 5 for r in rows])
        qnli = [(i, a, b, "entailment" if y else "not_entailment") for i, (a, b, y) in enumerate(pairs)]
        _tsv(root / "QNLI" / f"{split}.tsv", ["index", "question", "sentence", "label"], qnli)
        _tsv(root / "RTE" / f"{split}.tsv", ["index", "sentence1", "sentence2", "label"], qnli)
    return root


def write_superglue(root: Path, n_train: int = 32, n_dev: int = 16, seed: int = 0) -> Path:
    """BoolQ, CB, COPA, WiC in SuperGLUE's jsonl layout (train.jsonl, val.jsonl)."""
    root = Path(root)
    for split, n, s in (("train", n_train, seed), ("val", n_dev, seed + 1)):
        data = polar_sentences(n, s)
        rng = random.Random(s + 200)
        _jsonl(root / "BoolQ" / f"{split}.jsonl",
               [{"question": sentence(rng), "passage": t, "idx": i, "label": bool(y)} for i, (t, y) in enumerate(data)])
        _jsonl(root / "CB" / f"{split}.jsonl",
               [{"premise": sentence(rng), "hypothesis": t, "idx": i,
                 "label": ["contradiction", "entailment", "neutral"][y if i % 5 else 2]}
                for i, (t, y) in enumerate(data)])
        copa = []
        for i, (t, y) in enumerate(data):
            good, bad = sentence(rng, rng.choice(POSITIVE)), sentence(rng, rng.choice(NEGATIVE))
            choices = (good, bad) if y == 0 else (bad, good)
            copa.append({"premise": sentence(rng), "choice1": choices[0].capitalize(),
                         "choice2": choices[1].capitalize(), "question": "cause" if i % 2 else "effect",
                         "idx": i, "label": y})
        _jsonl(root / "COPA" / f"{split}.jsonl", copa)
        wic = []
        for i, (t, y) in enumerate(data):
            s1, s2 = "the bank of the river", t + " bank"
            wic.append({"word": "bank", "sentence1": s1, "sentence2": s2, "idx": i, "label": bool(y),
                        "start1": 4, "end1": 8, "start2": len(t) + 1, "end2": len(t) + 5, "version": 1.1})
        _jsonl(root / "WiC" / f"{split}.jsonl", wic)
    return root


XNLI_DEV_HEADER = ["language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                   "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2",
                   "label3", "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match"]


def write_xnli(root: Path, languages=("en", "de"), n_train: int = 32, n_dev: int = 16, seed: int = 0) -> Path:
    """XNLI-1.0/xnli.dev.tsv (all languages in one file) and XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv."""
    root = Path(root)
    dev_rows = []
    for k, lang in enumerate(languages):
        rng = random.Random(seed + k)
        train = [(sentence(rng), t, ["contradictory", "entailment"][y]) for t, y in polar_sentences(n_train, seed + k)]
        _tsv(root / "XNLI-MT-1.0" / "multinli" / f"multinli.train.{lang}.tsv", ["premise", "hypo", "label"], train)
        for i, (t, y) in enumerate(polar_sentences(n_dev, seed + 50 + k)):
            gold = ["contradiction", "entailment"][y]
            dev_rows.append((lang, gold, "(", "(", "(", "(", sentence(rng), t, i, i, "facetoface", gold, gold, gold,
                             gold, gold, "x", "y", "True"))
    _tsv(root / "XNLI-1.0" / "xnli.dev.tsv", XNLI_DEV_HEADER, dev_rows)
    return root


def write_sotu(root: Path, per_address: int = 12) -> Path:
    """A SOTU-like corpus (scripts/fetch_corpus.py's naming): two addresses a year for the first 8
    years of each era, every sentence naming its year and speaker, plus a too-short line and a non-address."""
    from studies.demo.downstream import ERAS

    root = Path(root)
    for _, first, _ in ERAS:
        for year in range(first, first + 8):
            for who in ("a", "b"):
                lines = [f"In the year {year} speaker {who} said thing number {i} to the whole congress today ."
                         for i in range(per_address)]
                _write(root / f"{year}_{who}_x.txt", "\n".join(lines + ["Short line."]) + "\n")
    _write(root / "README.txt", "not an address\n")
    return root


# --- the fixtures themselves ---------------------------------------------------------------

def test_tokenizer_has_roberta_template_and_fairseq_specials(tmp_path):
    from transformers import AutoTokenizer

    make_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    ids = tok("good film", "bad plot")["input_ids"]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3  # <s> a </s></s> b </s>
    assert tok.decode(ids[1:3]) == "good film"


def test_polar_sentences_are_balanced_and_separable():
    data = polar_sentences(40, seed=3)
    assert sum(y for _, y in data) == 20
    for text, y in data:
        words = set(text.split())
        assert bool(words & set(POSITIVE)) == bool(y) and bool(words & set(NEGATIVE)) == (not y)

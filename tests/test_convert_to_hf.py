"""fairseq_headless.export (scripts/convert_to_hf.py): fairseq checkpoints -> Hugging Face folders that compute the same numbers.

Every family is checked on random-weight models built from the project's configs (weights
perturbed so that no LayerNorm is the identity and no bias is zero) and saved by fairseq's own
Trainer.save_checkpoint; outputs are compared with the source fairseq model, tokenizer ids with the
preprocessing path (prepare_data's tokenizer + 4, and the binarized validation split itself).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, network_terms, rounding_bound, write_markov_corpus
from fairseq_headless.data.folder import DataFolder, open_data_folder
from fairseq_headless.data.tokenizer import SentencePieceTokenizer
from fairseq_headless.export import tokenizer as export_tokenizer, weights
from helpers.export import byte_level_tokenizer, corpus_lines, prepare, run, save_checkpoint
from fairseq_headless.cli import InputError

TOL = 1e-4


def input_embeddings(model):
    from fairseq_headless.criterions.cwt_criterion import input_embeddings as lookup

    return lookup(model)


def valid_lines(data: Path) -> list[str]:
    """prepare_data's valid split (whole records of smallest hash rank, docs/data.md), recomputed from
    the manifest's thresholds."""
    from fairseq_headless.data import sources, splits

    manifest = json.loads((data / "manifest.json").read_text())
    plan = splits.SplitPlan(**manifest["split_thresholds"]["all"])
    found = sources.resolve_inputs([(None, manifest["sources"][0]["path"])])
    rank = splits.RecordHasher(found[0].name)
    return [line for unit in sources.make_units(found) for record in sources.read_unit(found, unit, "text")
            if plan.split_of(rank(record.position)[0]) == "valid" for line in record.lines]


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory):
    """A Pythia-style byte-level BPE tokenizer.json (<|endoftext|> = id 0), padded like Pythia's rows."""
    root = tmp_path_factory.mktemp("hf")
    return prepare(root, "--hf-tokenizer", byte_level_tokenizer(root / "tokenizer.json"), "--padding-factor", "128")


# --------------------------------------------------------------------------
# every family: convert, reload with transformers, compare with the source model
# --------------------------------------------------------------------------

CASES = {  # id: (config, data fixture, overrides, HF class, tied head)
    "headless_encoder": ("hmlm_tiny", "spm_folder", (), "HeadlessRobertaForMaskedLM", None),
    # a tokenizer.json with special tokens of its own (<|endoftext|>, <|padding|>) and 127 padding rows
    "headless_encoder_hf": ("hmlm_tiny", "hf_data", (), "HeadlessRobertaForMaskedLM", None),
    "vanilla_encoder": ("mlm_tiny", "spm_folder", (), "RobertaForMaskedLM", True),
    "vanilla_encoder_untied": ("mlm_tiny", "hf_data", ("+model.untie_weights_roberta=true",), "RobertaForMaskedLM", False),
    "headless_decoder": ("hlm_tiny", "spm_folder", (), "GPT2LMHeadModel", True),
    "vanilla_decoder": ("lm_tiny", "spm_folder", (), "GPT2LMHeadModel", True),
    # the shape of a headless decoder after causal fine-tuning: a head of its own
    "decoder_untied": ("lm_tiny", "hf_data", ("+model.share_decoder_input_output_embed=false",), "GPT2LMHeadModel", False),
    "headless_pythia": ("hlm_pythia_tiny", "spm_folder", (), "GPTNeoXForCausalLM", True),
    "vanilla_pythia": ("lm_pythia_tiny", "hf_data", (), "GPTNeoXForCausalLM", False),
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    config, data_fixture, overrides, hf_class, tied = CASES[request.param]
    data = request.getfixturevalue(data_fixture)
    root = tmp_path_factory.mktemp(request.param)
    model = save_checkpoint(config, data, root / "checkpoint.pt", *overrides)
    assert run("--checkpoint", root / "checkpoint.pt", "--output", root / "hf") == 0
    return request.param, model, root / "hf", data, hf_class, tied


def never_predicted(data: Path) -> list[int]:
    """The ids a headless encoder export must never predict, from the data folder itself: fairseq's
    <s> <pad> </s> <unk>, dict.txt's madeupword rows, <mask> (appended by masked_lm), and the
    tokenizer's unknown/control pieces (sentencepiece) or special added tokens (tokenizer.json) + 4."""
    from tokenizers import Tokenizer

    symbols = (data / "dict.txt").read_text(encoding="utf-8").splitlines()
    ids = {0, 1, 2, 3, 4 + len(symbols)}  # dict.txt lists no specials; <mask> follows it
    ids |= {4 + k for k, line in enumerate(symbols) if line.startswith("madeupword")}
    spm_files = list((data / "tokenizer").glob("*.model"))
    if spm_files:
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor(model_file=str(spm_files[0]))
        ids |= {4 + i for i in range(processor.get_piece_size())
                if processor.is_control(i) or processor.is_unknown(i)}
    else:
        tok = Tokenizer.from_file(str(data / "tokenizer" / "tokenizer.json"))
        ids |= {4 + i for i, added in tok.get_added_tokens_decoder().items() if added.special}
    return sorted(ids)


def excluded(logits, never):
    """fairseq's e^T scores after the export's exclusion: the never-predicted ids at the lowest value."""
    logits = logits.clone()
    logits[..., never] = torch.finfo(logits.dtype).min
    return logits


def random_ids(rows: int, length: int, seed: int = 7):
    ids = torch.randint(4, rows, (3, length), generator=torch.Generator().manual_seed(seed))
    ids[1, length // 3:] = 1  # right padding, as fairseq batches are padded
    return ids, ids.ne(1)


def test_output_folder_holds_safetensors_config_tokenizer_and_card(exported):
    from fairseq_headless.export import modeling_headless_roberta

    case, _, out, data, hf_class, _ = exported
    expected = ["README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    if hf_class in ("GPT2LMHeadModel", "GPTNeoXForCausalLM"):
        expected.append("generation_config.json")
    headless_encoder = hf_class == "HeadlessRobertaForMaskedLM"
    if headless_encoder:  # the package's module, verbatim: the code the Auto classes run from the folder
        expected.append("modeling_headless_roberta.py")
        assert (out / "modeling_headless_roberta.py").read_bytes() == Path(
            modeling_headless_roberta.__file__).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no pickles
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [hf_class]
    if headless_encoder:
        assert config["model_type"] == "headless_roberta"
        assert config["never_predicted"] == never_predicted(data)
        assert config["auto_map"] == {
            auto: f"modeling_headless_roberta.{name}" for auto, name in [
                ("AutoConfig", "HeadlessRobertaConfig"), ("AutoModel", "HeadlessRobertaModel"),
                ("AutoModelForMaskedLM", "HeadlessRobertaForMaskedLM"),
                ("AutoModelForMultipleChoice", "HeadlessRobertaForMultipleChoice"),
                ("AutoModelForQuestionAnswering", "HeadlessRobertaForQuestionAnswering"),
                ("AutoModelForSequenceClassification", "HeadlessRobertaForSequenceClassification"),
                ("AutoModelForTokenClassification", "HeadlessRobertaForTokenClassification")]}
        assert "trust_remote_code=True" in (out / "README.md").read_text()
    else:  # vanilla encoders stay plain `roberta`, decoders GPT-2 / GPT-NeoX: no custom code
        assert "auto_map" not in config and config["model_type"] in ("roberta", "gpt2", "gpt_neox")
    card = (out / "README.md").read_text()
    config = CASES[case][0]
    assert f"criterion `{'headless_' if config.startswith('h') else ''}" in card
    assert str(data / "manifest.json") in card and ("headless:" in card) == config.startswith("h")
    assert not list(out.parent.glob("hf.tmp-*"))


def test_hidden_states_and_logits_match_the_fairseq_model(exported):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    case, model, out, data, hf_class, tied = exported
    encoder = "Roberta" in hf_class
    rows = input_embeddings(model).weight.shape[0]
    ids, real = random_ids(rows, 128)
    base = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    auto = AutoModelForMaskedLM if encoder else AutoModelForCausalLM
    full = auto.from_pretrained(out, trust_remote_code=True).eval()
    assert type(full).__name__ == hf_class
    with torch.no_grad():
        fs_hidden = model(ids, features_only=True)[0]
        fs_logits = model(ids)[0]
        hidden = base(input_ids=ids, attention_mask=real.long()).last_hidden_state
        logits = full(input_ids=ids, attention_mask=real.long()).logits
    if hf_class == "HeadlessRobertaForMaskedLM":  # fairseq's e^T, the never-predicted ids excluded
        assert base.pooler is None and not any("lm_head" in name for name, _ in full.named_parameters())
        fs_logits = excluded(fs_logits, never_predicted(data))
    else:
        assert full.config.tie_word_embeddings is tied
    assert fs_logits.abs().max() > 1.0 and fs_hidden.std() > 0.1  # not a degenerate comparison
    assert (hidden - fs_hidden)[real].abs().max() <= TOL
    assert (logits - fs_logits)[real].abs().max() <= TOL


def test_task_classes_load_and_run(exported):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    case, model, out, data, hf_class, _ = exported
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    encoder = "Roberta" in hf_class
    if encoder:
        classifier = AutoModelForSequenceClassification.from_pretrained(
            out, num_labels=3, trust_remote_code=True).eval()
        batch = tok(["A short one.", "The dictionary is padded to a multiple of eight."], padding=True,
                    return_tensors="pt")
        assert classifier(**batch).logits.shape == (2, 3)
        embeddings = input_embeddings(model).weight
        # stored weights copied through save and load, no arithmetic: bit equality is the right check
        assert torch.equal(classifier.roberta.embeddings.word_embeddings.weight, embeddings)
        # RoBERTa's own classification head for both kinds of encoder (Tab.1 compares like with like)
        assert type(classifier).__name__ == hf_class.replace("ForMaskedLM", "ForSequenceClassification")
        assert type(classifier.classifier).__module__ == "transformers.models.roberta.modeling_roberta"
        assert type(classifier.classifier).__name__ == "RobertaClassificationHead"
    if encoder:
        text = f"The data path should read in one {tok.mask_token} direction."
        predictions = pipeline("fill-mask", model=str(out), tokenizer=str(out), top_k=5,
                               trust_remote_code=True)(text)
        ids = tok(text, return_tensors="pt")["input_ids"]
        position = int((ids[0] == tok.mask_token_id).nonzero())
        with torch.no_grad():
            logits = model(ids)[0][0, position]
        if hf_class == "HeadlessRobertaForMaskedLM":
            logits = excluded(logits, never_predicted(data))
        top = logits.softmax(-1).topk(5)
        assert [p["token"] for p in predictions] == top.indices.tolist()
        # an export's logits against fairseq's; a probability moves by at most twice its logits' error
        bound = 2 * rounding_bound(network_terms(model, ids.numel()) + logits.numel(), logits.abs().max())
        assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=bound)
    if hf_class == "GPT2LMHeadModel":
        lm = AutoModelForCausalLM.from_pretrained(out).eval()
        prompt = tok("The headless model", return_tensors="pt")["input_ids"]
        generated = lm.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                do_sample=False)[0].tolist()
        tokens = prompt[0].tolist()  # greedy decoding with the fairseq model itself
        with torch.no_grad():
            for _ in range(12):
                tokens.append(int(model(torch.tensor([tokens]))[0][0, -1].argmax()))
                if tokens[-1] == lm.generation_config.eos_token_id:
                    break
        assert generated == tokens and len(tokens) > prompt.shape[1]


def test_tokenizer_ids_equal_the_binarized_validation_split(exported):
    """HF tokenizer(line) == the ids fairseq-preprocess wrote for that line (+ the task's specials)."""
    from fairseq.data import Dictionary, data_utils
    from transformers import AutoTokenizer

    case, _, out, data, hf_class, _ = exported
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    dictionary = Dictionary.load(str(data / "dict.txt"))
    dataset = data_utils.load_indexed_dataset(str(data / "valid"), dictionary)
    entries = [dataset[k] for k in range(len(dataset)) if len(dataset[k]) > 1]  # not document separators
    lines = valid_lines(data)
    assert len(entries) == len(lines) >= 200
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    compared = 0
    for line, binarized in zip(lines, entries):
        ids = tok(line)["input_ids"]
        if any(s in line for s in specials):  # read as a special by HF tokenizers (documented)
            continue
        expected = binarized.tolist()  # line ids + </s>
        if "Roberta" in hf_class:
            assert ids == [0] + expected, line  # masked_lm prepends <s>
        else:
            assert ids + [2] == expected, line  # language_modeling: no bos, </s> after each line
        assert tok.decode(ids, skip_special_tokens=True) == tok.decode(expected[:-1])
        compared += 1
    assert compared >= 150
    assert tok.pad_token_id == 1 and tok.eos_token_id == 2
    if "Roberta" in hf_class:
        assert tok.mask_token_id == len(dictionary) and tok.bos_token_id == 0
    else:
        assert tok.bos_token_id == 2 and tok.mask_token is None  # fairseq LMs start from </s>


# --------------------------------------------------------------------------
# a trained headless encoder in transformers' own tools: the fairseq model's e^T predictions
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_headless(spm_folder, tmp_path_factory):
    """hmlm_tiny trained 60 steps of its CWT criterion on the spm data folder, then exported."""
    root = tmp_path_factory.mktemp("trained_headless")
    model = save_checkpoint("hmlm_tiny", spm_folder, root / "checkpoint.pt", "dataset.batch_size=4", updates=60)
    assert run("--checkpoint", root / "checkpoint.pt", "--output", root / "hf") == 0
    return model, root / "hf"


def masked_texts(data: Path, count: int = 20) -> list[str]:
    """Validation lines with their middle word replaced by <mask>; at most 25 words, so that their tokens fit the
    tiny model's 128 positions (the corpus is the project's docs, whose lines may be long)."""
    texts = []
    for line in valid_lines(data):
        words = line.split()
        if 6 <= len(words) <= 25 and "<" not in line and "madeupword" not in line:
            texts.append(" ".join(words[:len(words) // 2] + ["<mask>"] + words[len(words) // 2 + 1:]))
    return texts[:count]


def test_fill_mask_pipeline_gives_the_fairseq_e_T_top_k_without_the_specials(trained_headless, spm_folder):
    """pipeline("fill-mask") = the fairseq checkpoint's e^T top-k after the exclusion; the card's snippet runs it."""
    from transformers import AutoTokenizer, pipeline

    model, out = trained_headless
    never = never_predicted(spm_folder)
    card = (out / "README.md").read_text()
    snippet = card.split("```python\n")[1].split("```")[0]
    namespace = {}
    exec(snippet, namespace)  # the model card's own code: PATH, fill_mask
    fill_mask = namespace["fill_mask"]
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    texts = masked_texts(spm_folder)
    raw_top_excluded = 0
    assert len(texts) == 20
    for text in texts:
        predictions = fill_mask(text, top_k=10)
        ids = tok(text, return_tensors="pt")["input_ids"]
        position = int((ids[0] == tok.mask_token_id).nonzero())
        with torch.no_grad():
            logits = model(ids)[0][0, position]  # fairseq's e^T (HeadlessRobertaEncoder.output_layer)
        raw_top_excluded += int(logits.argmax()) in never
        top = excluded(logits, never).softmax(-1).topk(10)
        assert [p["token"] for p in predictions] == top.indices.tolist(), text
        bound = 2 * rounding_bound(network_terms(model, ids.numel()) + logits.numel(), logits.abs().max())
        assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=bound)
        assert not set(p["token"] for p in predictions) & set(never)
    # without the exclusion an id that stands for no text (mostly <mask> itself) would often come first
    assert raw_top_excluded >= 5, raw_top_excluded
    # the card's own call, and a top_k reaching every id that may be predicted
    allowed = model.encoder.sentence_encoder.embed_tokens.weight.shape[0] - len(never)
    everything = pipeline("fill-mask", model=str(out), trust_remote_code=True)(texts[0], top_k=allowed)
    assert len(everything) == allowed and not set(p["token"] for p in everything) & set(never)
    assert all(p["token"] not in never for p in fill_mask("The <mask> of the Union."))


def test_auto_classes_load_the_folders_own_code(trained_headless, spm_folder):
    """AutoModel / AutoModelForMaskedLM / the task Auto classes load the exported file's classes (not
    the package's), whose masked-LM logits never rank an excluded id first."""
    from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForMultipleChoice,
                              AutoModelForSequenceClassification, AutoTokenizer)

    model, out = trained_headless
    never = never_predicted(spm_folder)
    loaded = {auto.__name__: auto.from_pretrained(out, trust_remote_code=True) for auto in (
        AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoModelForMultipleChoice)}
    for auto, name in [("AutoConfig", "HeadlessRobertaConfig"), ("AutoModel", "HeadlessRobertaModel"),
                       ("AutoModelForMaskedLM", "HeadlessRobertaForMaskedLM"),
                       ("AutoModelForSequenceClassification", "HeadlessRobertaForSequenceClassification"),
                       ("AutoModelForMultipleChoice", "HeadlessRobertaForMultipleChoice")]:
        cls = type(loaded[auto])
        assert cls.__name__ == name and cls.__module__.startswith("transformers_modules.")
        assert cls.__module__.endswith(".modeling_headless_roberta")
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    batch = tok(masked_texts(spm_folder)[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = loaded["AutoModelForMaskedLM"].eval()(**batch).logits
        fs_logits = model(batch["input_ids"])[0]
    real = batch["attention_mask"].bool()
    assert (logits[..., never] == torch.finfo(logits.dtype).min).all()
    assert not set(logits[real].argmax(-1).tolist()) & set(never)
    terms = network_terms(model, batch["input_ids"].numel())
    assert (logits - excluded(fs_logits, never))[real].abs().max() <= rounding_bound(terms, fs_logits.abs().max())


def test_the_projects_loaders_take_a_headless_export(trained_headless, spm_folder, tmp_path):
    """Fine-tuning (evaluation/finetune.py), its random-init control and the embedding analyses load the
    export through the Auto classes with trust_remote_code: encoder weights unchanged, RoBERTa's head new."""
    import math

    from studies.synonyms.embeddings import load_huggingface
    from fairseq_headless.evaluation.finetune import FinetuneConfig, finetune
    from fairseq_headless.evaluation.model_loading import load_model
    from studies.demo.downstream import random_init_copy
    from fairseq_headless.evaluation.task_data import Example
    from fairseq_headless.evaluation.tasks import GLUE_TASKS

    model, out = trained_headless
    embeddings = input_embeddings(model).weight
    spec = GLUE_TASKS["SST-2"]
    classifier, summary = load_model(out, spec)
    assert summary == ("hf: encoder loaded into HeadlessRobertaForSequenceClassification; "
                       "new head classifier.dense, classifier.out_proj")
    # stored weights copied through save and load, no arithmetic: bit equality is the right check
    assert torch.equal(classifier.roberta.embeddings.word_embeddings.weight, embeddings)
    assert torch.equal(load_huggingface(out, "--headless").weight, embeddings)
    control = random_init_copy(out, tmp_path / "control")
    assert (control / "modeling_headless_roberta.py").is_file()
    assert load_model(control, spec)[1].startswith("control: encoder loaded into HeadlessRobertaForSequenceClassification")
    # at initialisation (near-uniform predictions) the balanced loss of a 2-class batch is 2 ln 2
    lines = masked_texts(spm_folder, 16)
    train = [Example((line.replace("<mask>", "good" if k % 2 else "bad"),), k % 2) for k, line in enumerate(lines)]
    run = finetune(out, spec, train, {"dev": train[:8]}, FinetuneConfig(learning_rate=1e-7, epochs=1, batch_size=16),
                   0, tmp_path / "run", "x")
    assert run.epochs[0]["train_loss"] == pytest.approx(2 * math.log(2), abs=0.02)
    assert run.model_summary.startswith("hf: encoder loaded into HeadlessRobertaForSequenceClassification")


def test_the_modeling_file_imports_only_torch_and_transformers():
    """It runs from the export folder, where neither fairseq nor this package need be installed."""
    import ast

    from fairseq_headless.export import modeling_headless_roberta

    tree = ast.parse(Path(modeling_headless_roberta.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"torch", "transformers"}


def test_loading_without_trust_remote_code_is_an_error_that_names_it(trained_headless, monkeypatch):
    """No silently random head: without trust_remote_code=True every documented load stops and says what
    to pass (a terminal is asked first; here, as in scripts, input() has nothing to read)."""
    from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                              pipeline)

    def no_terminal(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    _, out = trained_headless
    for load in (AutoConfig.from_pretrained, AutoModel.from_pretrained, AutoModelForMaskedLM.from_pretrained,
                 AutoModelForSequenceClassification.from_pretrained,
                 lambda path: pipeline("fill-mask", model=path)):
        with pytest.raises(ValueError, match=r"pass the argument `trust_remote_code=True`"):
            load(str(out))


def test_tokenizer_specials_and_padding_rows(spm_folder, hf_data):
    """Edge ids of the exported vocabulary, and the one documented divergence (special-token text)."""
    from fairseq.data import Dictionary

    for data in (spm_folder, hf_data):
        manifest = json.loads((data / "manifest.json").read_text())
        size = manifest["id_mapping"]["dictionary_size"]
        reference, raw = export_tokenizer.raw_tokenizer(open_data_folder(data, "--data"))
        tok, unk = export_tokenizer.shift_to_fairseq_ids(raw, size, encoder=True, add_bos=False)
        assert [tok.id_to_token(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
        assert tok.token_to_id("<mask>") == size == len(Dictionary.load(str(data / "dict.txt")))
        madeup = manifest["id_mapping"]["madeupwords"]
        assert [tok.id_to_token(size - madeup + j) for j in range(madeup)] == [f"madeupword{j:04d}" for j in range(madeup)]
        assert tok.get_vocab_size() == size + 1
        assert tok.encode("x <mask>").ids[-2] == size  # HF reads special-token text as the special
        if data == spm_folder:  # sentencepiece's own <unk> <s> </s> (0 1 2) are fairseq 4 5 6, renamed
            assert [tok.id_to_token(i) for i in (4, 5, 6)] == ["tokenizer:<unk>", "tokenizer:<s>", "tokenizer:</s>"]
            assert unk == "tokenizer:<unk>"
        else:  # byte-level BPE has no unknown token; Pythia-style <|endoftext|> = 0 is fairseq 4
            assert unk == "<unk>" and tok.id_to_token(4) == "<|endoftext|>"


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_conversion_encodes_like_sentencepiece(tmp_path, model_type, monkeypatch):
    """Both sentencepiece model types convert and encode like sentencepiece without transformers'
    internal converter, whose output is not stable across releases: any import of it fails here."""
    import sentencepiece as spm

    monkeypatch.setitem(sys.modules, "transformers.convert_slow_tokenizer", None)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "m"), vocab_size=600,
                                   model_type=model_type, byte_fallback=True, hard_vocab_limit=False,
                                   minloglevel=2)
    reference, raw = export_tokenizer.raw_tokenizer(DataFolder((tmp_path,), None, (tmp_path / "m.model",), "sentencepiece"))
    size = 4 + reference.vocab_size + 4
    tok, unk = export_tokenizer.shift_to_fairseq_ids(raw, size, encoder=False, add_bos=False)
    specials = {t.content for t in tok.get_added_tokens_decoder().values()}
    # not compared: text holding a byte piece's name (docs/export.md, known differences)
    lines = [line for line in corpus_lines() if not any(s in line for s in specials)
             and not re.search(r"<0x[0-9A-Fa-f]{2}>", line)] + [
        "unseen: ☃ ⚽ 🎉", "  two leading spaces,   runs of spaces  ", "tab\tand\nnewline", "\u2581already escaped",
        "ＦＵＬＬ width ①", ""]
    expected = [[i + 4 for i in ids] for ids in reference.encode_batch(lines)]
    got = [e.ids for e in tok.encode_batch(lines)]
    if model_type == "bpe":
        assert got == expected
    else:  # unigram: equal, or an exact tie of two segmentations that the two break differently
        scores = [p.score for p in reference.proto.pieces]
        differ = [(g, e) for g, e in zip(got, expected) if g != e]
        # a tie: equal sums of float32 piece scores, up to the rounding of those sums
        assert all(sum(scores[i - 4] for i in g) == pytest.approx(
            sum(scores[i - 4] for i in e), abs=rounding_bound(len(g) + len(e), sum(abs(scores[i - 4]) for i in g + e)))
                   for g, e in differ), differ[:2]
        assert len(differ) <= len(lines) // 100
    assert tok.token_to_id(unk) == 4
    # decoding gives back sentencepiece's own decoding (dummy prefix stripped, bytes fused)
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    for line, ids in zip(lines[-6:], expected[-6:]):
        assert raw.decode([i - 4 for i in ids]) == processor.decode([i - 4 for i in ids]), line


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@pytest.mark.parametrize("options", [
    dict(add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity"),
    dict(add_dummy_prefix=True, remove_extra_whitespaces=False, user_defined_symbols=["<sep>", "[X]"]),
])
def test_sentencepiece_options_encode_like_sentencepiece(tmp_path, model_type, options):
    """The normalizer spec's switches and user-defined pieces (a model brought from elsewhere may set them)."""
    import sentencepiece as spm

    # a fixed generated corpus, not the docs: unigram breaks exact ties in segmentation scores differently
    # from sentencepiece (docs/export.md), so a model trained on changing text may hold one
    text = tmp_path / "text.txt"
    write_markov_corpus(text, 3000, seed=1)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "m"), vocab_size=800,
                                   model_type=model_type, byte_fallback=True, hard_vocab_limit=False,
                                   minloglevel=2, **options)
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    raw = export_tokenizer.spm_to_tokenizers(SentencePieceTokenizer(tmp_path / "m.model", "--spm-model"))
    lines = text.read_text(encoding="utf-8").splitlines()[:300] + ["  two leading,   runs  ", "tab\tand\nnewline", "ＦＵＬＬ ①", "", " ",
                                    "a<sep>b [X]c", "<sep>"]
    assert [raw.encode(line, add_special_tokens=False).ids for line in lines] == processor.encode(lines)
    assert [raw.decode(ids) for ids in processor.encode(lines)] == processor.decode(processor.encode(lines))
    if "user_defined_symbols" in options:  # emitted whole, never merged with a neighbour
        assert processor.piece_to_id("<sep>") in raw.encode("a<sep>b", add_special_tokens=False).ids


@pytest.mark.parametrize("options,message", [
    (dict(treat_whitespace_as_suffix=True), "treat_whitespace_as_suffix"),
    (dict(user_defined_symbols=["ＡＢ"]), "changed by the model's normalization map"),  # NFKC: full width -> AB
])
def test_sentencepiece_models_the_fast_tokenizer_cannot_follow_are_refused(tmp_path, options, message):
    import sentencepiece as spm

    text = tmp_path / "text.txt"
    text.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "m"), vocab_size=200,
                                   hard_vocab_limit=False, minloglevel=2, **options)
    with pytest.raises(InputError, match=message):
        export_tokenizer.spm_to_tokenizers(SentencePieceTokenizer(tmp_path / "m.model", "--spm-model"))


def test_tokenizer_json_with_colliding_specials_is_renamed_not_merged():
    """A RoBERTa-like tokenizer.json holding its own <s>/</s>/<unk>/<mask> keeps its ids, shifted."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "<mask>": 3, "hello": 4, "world": 5}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok, unk = export_tokenizer.shift_to_fairseq_ids(raw, 16, encoder=True, add_bos=False)
    assert tok.encode("hello world planet").ids == [0, 8, 9, 6, 2]
    assert unk == "tokenizer:<unk>" and tok.id_to_token(7) == "tokenizer:<mask>" and tok.token_to_id("<mask>") == 16


# --------------------------------------------------------------------------
# the checks fail when they should
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm_checkpoint(spm_folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "checkpoint.pt"
    save_checkpoint("lm_tiny", spm_folder, path, seed=1)
    return path


def assert_error(capsys, code, rc, *fragments):
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    lines = err.splitlines()  # the run's messages, then one error line
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], err
    for fragment in fragments:
        assert fragment in lines[-1], err


def test_gelu_trap_fails_the_parity_check_and_writes_nothing(lm_checkpoint, tmp_path, capsys, monkeypatch):
    """Mapping fairseq's gelu_accurate to exact gelu is off by more than the bound: exit 1, no folder."""
    monkeypatch.setitem(weights.ACTIVATIONS, "gelu_accurate", "gelu")
    rc = run("--checkpoint", lm_checkpoint, "--output", tmp_path / "out" / "hf")
    assert_error(capsys, 1, rc, "parity check failed", "> 0.0001")
    assert not (tmp_path / "out").exists()


def test_tokenizer_mismatch_fails_the_check(lm_checkpoint, tmp_path, capsys, monkeypatch):
    shift = export_tokenizer.shift_to_fairseq_ids
    monkeypatch.setattr(export_tokenizer, "shift_to_fairseq_ids", lambda raw, size, encoder, add_bos: shift(raw, size, encoder, True))
    rc = run("--checkpoint", lm_checkpoint, "--output", tmp_path / "hf")
    assert_error(capsys, 1, rc, "tokenizer mismatch")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force_and_moved_data_needs_data(lm_checkpoint, spm_folder, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    assert_error(capsys, 2, run("--checkpoint", lm_checkpoint, "--output", out), "already exists", "--force")
    assert (out / "keep.txt").read_text() == "earlier results"
    # the data folder moved: task.data in the checkpoint no longer exists
    moved = tmp_path / "moved"
    shutil.copytree(spm_folder, moved)
    state = torch.load(lm_checkpoint, weights_only=True)
    state["cfg"]["task"]["data"] = str(tmp_path / "gone")
    torch.save(state, tmp_path / "moved.pt")
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "moved.pt", "--output", out, "--force"),
                 "no manifest.json", "--data")
    assert (out / "keep.txt").exists()
    assert run("--checkpoint", tmp_path / "moved.pt", "--output", out, "--force", "--data", moved) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert str(moved / "manifest.json") in (out / "README.md").read_text()


def test_bad_checkpoints(lm_checkpoint, tmp_path, capsys):
    out = tmp_path / "hf"
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "nope.pt", "--output", out), "file not found")
    blob = lm_checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "truncated.pt", "--output", out), "truncated or corrupt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 10)
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "noise.pt", "--output", out), "truncated or corrupt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "plain.pt", "--output", out), "--checkpoint")
    save = tmp_path / "save"  # a save_dir given instead of one of its checkpoints
    save.mkdir()
    assert_error(capsys, 2, run("--checkpoint", save, "--output", out),
                 f"--checkpoint {save}: a folder with no .pt file in it; pass a checkpoint file")
    for name in ("checkpoint3.pt", "checkpoint_last.pt", "checkpoint_best.pt", "checkpoint1.pt"):
        (save / name).write_bytes(b"")
    err = f"--checkpoint {save}: a folder, not a checkpoint file; pass one of its files (checkpoint_best.pt, " \
          f"checkpoint_last.pt, checkpoint1.pt, checkpoint3.pt), e.g. --checkpoint {save / 'checkpoint_best.pt'}"
    assert_error(capsys, 2, run("--checkpoint", save, "--output", out), err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "noise.pt", "plain.pt", "save", "truncated.pt"]


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_not_run(lm_checkpoint, tmp_path, capsys):
    state = torch.load(lm_checkpoint, weights_only=True)
    marker = tmp_path / "code_ran"
    state["extra_state"]["payload"] = _RunsCodeWhenUnpickled(marker)
    torch.save(state, tmp_path / "evil.pt")
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "evil.pt", "--output", tmp_path / "hf"),
                 "weights_only", "pickled")
    assert not marker.exists() and not (tmp_path / "hf").exists()


def test_unknown_and_unexportable_architectures(lm_checkpoint, spm_folder, tmp_path, capsys):
    state = torch.load(lm_checkpoint, weights_only=True)
    state["cfg"]["model"]["_name"] = "no_such_arch"
    torch.save(state, tmp_path / "unknown.pt")
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "unknown.pt", "--output", tmp_path / "hf"),
                 "unknown architecture `no_such_arch`")
    # fairseq's plain transformer_lm defaults: post-LN, sinusoidal positions, scaled embeddings, relu
    save_checkpoint("lm_tiny", spm_folder, tmp_path / "plain.pt", "model._name=transformer_lm",
                    "+model.decoder_layers=1", "+model.decoder_embed_dim=32", "+model.decoder_ffn_embed_dim=64",
                    "+model.decoder_attention_heads=2")
    capsys.readouterr()  # hydra's deprecation note while building it
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "plain.pt", "--output", tmp_path / "hf"),
                 "`transformer_lm` cannot be expressed as GPT2LMHeadModel", "post-LayerNorm", "sinusoidal",
                 "scaled embeddings")
    with pytest.raises(InputError, match="no Hugging Face export"):
        weights.family_of(torch.nn.Linear(1, 1), "some_arch")
    assert not (tmp_path / "hf").exists()


def test_bad_data_folders(lm_checkpoint, spm_folder, hf_data, tmp_path, capsys):
    out = tmp_path / "hf"
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(spm_folder, no_tokenizer)
    (no_tokenizer / "tokenizer" / "spm.model").unlink()
    assert_error(capsys, 2, run("--checkpoint", lm_checkpoint, "--output", out, "--data", no_tokenizer),
                 "tokenizer file", "missing")
    broken = tmp_path / "broken_tokenizer"
    shutil.copytree(spm_folder, broken)
    (broken / "tokenizer" / "spm.model").write_bytes(b"not a model")
    assert_error(capsys, 2, run("--checkpoint", lm_checkpoint, "--output", out, "--data", broken), "spm.model")
    disagree = tmp_path / "disagree"
    shutil.copytree(spm_folder, disagree)
    rows = (disagree / "dict.txt").read_text().splitlines()
    (disagree / "dict.txt").write_text("\n".join(rows[:-20]) + "\n")  # another tokenizer's dictionary
    assert_error(capsys, 2, run("--checkpoint", lm_checkpoint, "--output", out, "--data", disagree),
                 "dict.txt and", "disagree")
    # a consistent data folder, but not the one this checkpoint was trained on
    assert_error(capsys, 2, run("--checkpoint", lm_checkpoint, "--output", out, "--data", hf_data),
                 "do not fit")
    assert not out.exists()


def test_a_plain_fairseq_preprocess_folder_exports_with_its_tokenizer_files(tmp_path, capsys):
    """fairseq's own RoBERTa recipe (GPT-2 BPE ids through fairseq-preprocess, no manifest.json,
    docs/data.md): exported when given --tokenizer encoder.json vocab.bpe, and the exported tokenizer
    gives the ids fairseq-preprocess wrote."""
    from fairseq.data import Dictionary, data_utils
    from transformers import AutoTokenizer

    from helpers.plain_folder import plain_fairseq_folder

    data, encoder_json, vocab_bpe = plain_fairseq_folder(tmp_path / "plain")
    save_checkpoint("hlm_tiny", data, tmp_path / "lm.pt")
    capsys.readouterr()
    out = tmp_path / "hf"
    assert_error(capsys, 2, run("--checkpoint", tmp_path / "lm.pt", "--output", out), "no manifest.json",
                 "tokenizer files")
    assert run("--checkpoint", tmp_path / "lm.pt", "--output", out, "--tokenizer", encoder_json, vocab_bpe) == 0
    assert "lines identical to the preprocessing path" in capsys.readouterr().err
    tok = AutoTokenizer.from_pretrained(out)
    dictionary = Dictionary.load(str(data / "dict.txt"))
    valid = data_utils.load_indexed_dataset(str(data / "valid"), dictionary)
    lines = (data.parent / "valid.raw").read_text().splitlines()
    assert len(valid) == len(lines)
    for k, line in enumerate(lines):
        assert tok(line)["input_ids"] + [2] == valid[k].tolist(), line
    card = (out / "README.md").read_text()
    assert "binarized by fairseq-preprocess" in card and "encoder.json" in card


# --------------------------------------------------------------------------
# the command line itself (the demo test converts two checkpoints trained by fairseq-hydra-train)
# --------------------------------------------------------------------------

def test_command_line(lm_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    command = [sys.executable, REPO / "scripts" / "convert_to_hf.py", "--checkpoint", lm_checkpoint,
               "--output", tmp_path / "hf"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max abs diff: hidden" in proc.stderr and "warning" not in proc.stderr.lower()  # the messages, no warning
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert lm.config.n_positions == 128 and lm.config.activation_function == "gelu_new"
    assert "0 updates" in (tmp_path / "hf" / "README.md").read_text()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --output") and proc.stderr.count("\n") == 1

"""fairseq_headless/data/folder.py: every reader of a data folder resolves it the same way, a colon
list of shards included; and a folder binarized by fairseq-preprocess directly, with fairseq's own
RoBERTa recipe (GPT-2 BPE through examples/roberta/multiprocessing_bpe_encoder.py), is first-class:
the project's configs train on it and it is read with its tokenizer files.

The GPT-2 BPE files are generated locally (tests/helpers/plain_folder.py); nothing touches the network.
"""
from __future__ import annotations

import json

import pytest

from conftest import build_task_and_model

from fairseq_headless.data.folder import open_data_folder, split_data_path
from helpers.plain_folder import plain_fairseq_folder
from fairseq_headless.cli import InputError


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return plain_fairseq_folder(tmp_path_factory.mktemp("plain"))


def test_colon_lists_resolve_to_the_first_shard(tmp_path):
    for i in range(3):
        (tmp_path / f"shard{i}").mkdir()
    (tmp_path / "shard0" / "tokenizer").mkdir()
    (tmp_path / "shard0" / "tokenizer" / "spm.model").write_bytes(b"x")
    (tmp_path / "shard0" / "dict.txt").write_text("0 1\n")
    (tmp_path / "shard0" / "manifest.json").write_text(json.dumps({
        "tokenizer": {"type": "sentencepiece", "path": "tokenizer/spm.model"},
        "id_mapping": {"offset": 4, "fairseq_specials": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}}}))
    data = ":".join(str(tmp_path / f"shard{i}") for i in range(3))
    folder = open_data_folder(data, "--data")
    assert folder.shards == tuple(tmp_path / f"shard{i}" for i in range(3)) == tuple(split_data_path(data))
    assert folder.path == tmp_path / "shard0" and folder.dictionary == tmp_path / "shard0" / "dict.txt"
    assert folder.tokenizer == (tmp_path / "shard0" / "tokenizer" / "spm.model",)
    assert folder.tokenizer_type == "sentencepiece" and folder.offset == 4
    assert open_data_folder(tmp_path / "shard0", "--data") == open_data_folder(str(tmp_path / "shard0"), "--data")
    # the errors name the option and the fix
    with pytest.raises(InputError, match=r"^--data-bin .*shard1: no manifest.json in .*shard1 .*tokenizer files"):
        open_data_folder(tmp_path / "shard1", f"--data-bin {tmp_path / 'shard1'}")
    (tmp_path / "shard0" / "tokenizer" / "spm.model").unlink()
    with pytest.raises(InputError, match="tokenizer file .*spm.model .* is missing"):
        open_data_folder(data, "--data")
    (tmp_path / "shard0" / "manifest.json").write_text(json.dumps({
        "tokenizer": {"type": "hf", "path": "t.json"}, "id_mapping": {"offset": 0}}))
    with pytest.raises(InputError, match="id_mapping is not `tokenizer id \\+ 4`"):
        open_data_folder(data, "--data")
    with pytest.raises(InputError, match="no dict.txt"):
        open_data_folder(tmp_path / "shard1", "--data", need_tokenizer=False).require_dictionary("--data")


def test_plain_fairseq_preprocess_folder_reads_with_its_tokenizer_files(plain):
    data, encoder_json, vocab_bpe = plain
    assert not (data / "manifest.json").exists()
    folder = open_data_folder(data, "--data", tokenizer=(vocab_bpe, encoder_json))  # any order
    assert folder.manifest is None and folder.tokenizer_type == "gpt2"
    assert folder.tokenizer == (encoder_json, vocab_bpe)
    tokenizer = folder.load_tokenizer()
    # the binarized ids are fairseq's GPT-2 encoder's ids + 4, line by line
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(folder.require_dictionary("--data")))
    assert len(dictionary) == 4 + tokenizer.vocab_size + (-(4 + tokenizer.vocab_size)) % 8
    valid = data_utils.load_indexed_dataset(str(data / "valid"), dictionary)
    lines = (data.parent / "valid.raw").read_text().splitlines()
    assert len(valid) == len(lines)
    encoder = folder.fairseq_encoder()  # what LAMBADA and the embedding analyses tokenize with
    for k, line in enumerate(lines):
        assert valid[k].tolist() == [i + 4 for i in tokenizer.encode_batch([line])[0]] + [2]
        assert valid[k].tolist() == encoder(line) + [2]
    # and the `tokenizers` rebuild of the same files (what the export ships) encodes the same
    rebuilt = tokenizer.to_tokenizers()
    assert all(rebuilt.encode(line).ids == tokenizer.encode_batch([line])[0] for line in lines if line)
    with pytest.raises(InputError, match="no manifest.json"):
        open_data_folder(data, "--data")


@pytest.mark.parametrize("config", ["hmlm_tiny", "mlm_tiny", "hlm_tiny", "lm_tiny", "hlm_pythia_tiny"])
def test_configs_train_on_a_plain_fairseq_preprocess_folder(plain, config, one_thread):
    """Every kind of config (headless / vanilla, encoder / decoder, GPT-2 / Pythia shapes): a batch of
    the folder goes through the model and criterion: a finite loss and finite gradients."""
    import torch

    data, _, _ = plain
    cfg, task, model = build_task_and_model(config, data, "common.cpu=true")
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    batches = task.get_batch_iterator(task.dataset("train"), max_tokens=512, max_sentences=4,
                                      max_positions=model.max_positions(), seed=1).next_epoch_itr(shuffle=False)
    sample = next(batches)
    model.train()
    loss, sample_size, logging = criterion(model, sample)
    assert torch.isfinite(loss) and sample_size > 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gpt2_bpe_files_name_endoftext_as_their_special(plain):
    """A headless export of a GPT-2 BPE folder never predicts <|endoftext|> (export/tokenizer.never_predicted)."""
    from fairseq_headless.data.tokenizer import GPT2BPETokenizer

    _, encoder_json, vocab_bpe = plain
    encoder = json.loads(encoder_json.read_text())
    assert GPT2BPETokenizer(encoder_json, vocab_bpe).special_ids() == {encoder["<|endoftext|>"]}

"""Packing (docs/data.md, Packing): every config trains and validates on
paragraph-per-line data whose lines are longer than its tokens_per_sample, with no sample skipped.

Each config's own task loads a binarized folder (fairseq's mmap builder + dict.txt) whose lines run up
to 3x tokens_per_sample, exactly as ``fairseq-hydra-train`` would (same task settings, model built for
its ``max_positions``), and the tests count tokens: masked_lm's ``none`` blocks hold
tokens_per_sample - 1 tokens of the split and a prepended <s>; language_modeling's hold
tokens_per_sample tokens; only the last block of a split is shorter. Every block reaches a batch
of some rank, with fairseq's size filter (train) or without skipping (valid: the default
``skip_invalid_size_inputs_valid_test=false`` raises on any sample over max_positions).
"""

import math
import re

import numpy as np
import pytest
import torch

from conftest import REPO, build_task_and_model, run_cli
from test_configs import CONFIGS

SPLIT_LINES = {"train": 48, "valid": 16}
DICT_SYMBOLS = 200


def write_long_line_folder(folder, tokens_per_sample: int, seed: int = 0):
    """dict.txt plus train/valid mmap splits, one entry per line as prepare_data writes them (ids then
    </s>; a lone </s> between documents), line lengths up to 3 x tokens_per_sample. Returns each
    split's token stream."""
    from fairseq.data import Dictionary, indexed_dataset

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(DICT_SYMBOLS)))
    dictionary = Dictionary.load(str(folder / "dict.txt"))
    rng = np.random.default_rng(seed)
    streams = {}
    for split, lines in SPLIT_LINES.items():
        builder = indexed_dataset.make_builder(str(folder / f"{split}.bin"), "mmap", vocab_size=len(dictionary))
        entries = []
        for line in range(lines):
            length = int(rng.integers(1, 3 * tokens_per_sample))
            entries.append([*rng.integers(dictionary.nspecial, len(dictionary), length), dictionary.eos()])
            if line % 5 == 4 and line < lines - 1:
                entries.append([dictionary.eos()])  # a document boundary
        for entry in entries:
            builder.add_item(torch.tensor(entry, dtype=torch.int64))
        builder.finalize(str(folder / f"{split}.idx"))
        streams[split] = np.concatenate(entries)
        long_lines = sum(len(e) > tokens_per_sample for e in entries)
        assert long_lines >= lines // 3, long_lines  # the case `complete` skips is a large part of the data
    return streams


@pytest.fixture(scope="module")
def long_line_data(tmp_path_factory):
    """tokens_per_sample -> (folder, {split: token stream}), one folder per length the configs use."""
    made = {}

    def get(tokens_per_sample):
        if tokens_per_sample not in made:
            folder = tmp_path_factory.mktemp(f"long_lines_{tokens_per_sample}")
            made[tokens_per_sample] = folder, write_long_line_folder(folder, tokens_per_sample)
        return made[tokens_per_sample]

    return get


def tokens_per_sample_of(name):
    from test_configs import yaml_tree

    return yaml_tree(name)["task.tokens_per_sample"]


def original_tokens(item, task):
    """The unmasked tokens of one sample (masked_lm: a target is pad where the input was left as is)."""
    if "target" in item and "net_input.src_tokens" in item:  # masked_lm
        target, source = item["target"], item["net_input.src_tokens"]
        return torch.where(target != task.source_dictionary.pad(), target, source)
    return item["target"]  # language_modeling: the block itself, predicted from its shifted copy


def epoch_tokens(task, cfg, dataset, max_positions, ignore_invalid_inputs):
    """Tokens of every batch every rank of the config's world gets in one epoch, as the trainer
    builds its iterators (fairseq's own `ntokens`: masked_lm counts <s>, language_modeling targets)."""
    ranks = cfg.distributed_training.distributed_world_size
    total, samples = 0, 0
    for rank in range(ranks):
        iterator = task.get_batch_iterator(
            dataset=dataset, max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
            max_positions=max_positions, ignore_invalid_inputs=ignore_invalid_inputs,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple, seed=cfg.common.seed,
            num_shards=ranks, shard_id=rank, num_workers=0, epoch=1, disable_iterator_cache=True,
            skip_remainder_batch=cfg.optimization.skip_remainder_batch,
        )
        for batch in iterator.next_epoch_itr(shuffle=True):
            total += batch.get("ntokens", 0)  # a rank short of batches gets an empty (dummy) one
            samples += batch.get("nsentences", 0)
    return total, samples


@pytest.mark.parametrize("name", CONFIGS)
def test_every_token_of_long_lines_is_trained_and_validated(name, long_line_data):
    from fairseq import utils

    tokens_per_sample = tokens_per_sample_of(name)
    folder, streams = long_line_data(tokens_per_sample)
    cfg, task, model = build_task_and_model(name, folder)
    encoder = cfg.task._name == "masked_lm"
    prepended = 1 if encoder else 0  # masked_lm: <s> before every block of tokens_per_sample - 1
    block = tokens_per_sample - prepended
    max_positions = utils.resolve_max_positions(task.max_positions(), model.max_positions())
    assert not cfg.dataset.skip_invalid_size_inputs_valid_test  # fairseq's default: a long sample would raise

    for split, stream in streams.items():
        task.load_dataset(split)
        dataset = task.dataset(split)
        sizes = np.asarray(dataset.sizes[0] if isinstance(dataset.sizes, list) else dataset.sizes)
        # the split cut into full blocks and one last partial block, in order, nothing lost or repeated
        assert len(dataset) == math.ceil(len(stream) / block)
        last = len(stream) - (len(dataset) - 1) * block
        assert sizes.tolist() == [tokens_per_sample] * (len(dataset) - 1) + [last + prepended]
        assert int(sizes.sum()) - prepended * len(dataset) == len(stream)
        packed = [original_tokens(dataset[i], task) for i in range(len(dataset))]
        if encoder:
            assert all(int(p[0]) == task.source_dictionary.bos() for p in packed)
        assert np.array_equal(torch.cat([p[prepended:] for p in packed]).numpy(), stream)

        # fairseq's size filter for the config's max_positions drops nothing
        assert sizes.max() <= max_positions
        indices, ignored = dataset.filter_indices_by_size(dataset.ordered_indices(), max_positions)
        assert ignored == [] and len(indices) == len(dataset)

        # train: as Trainer.get_train_iterator (ignore_invalid_inputs=True); valid: as get_valid_iterator
        ntokens, nsentences = epoch_tokens(task, cfg, dataset, max_positions, ignore_invalid_inputs=split == "train")
        assert nsentences == len(dataset)
        assert ntokens == len(stream) + prepended * len(dataset)


def test_complete_blocks_would_skip_the_long_lines(long_line_data):
    """The data has teeth: with the old `sample_break_mode: complete` the size filter drops the long lines
    from training and validation raises, which is why the configs pack blocks across lines."""
    from fairseq import utils

    folder, streams = long_line_data(128)
    cfg, task, model = build_task_and_model("hmlm_tiny", folder, "task.sample_break_mode=complete")
    max_positions = utils.resolve_max_positions(task.max_positions(), model.max_positions())
    task.load_dataset("train")
    train = task.dataset("train")
    _, ignored = train.filter_indices_by_size(train.ordered_indices(), max_positions)
    assert len(ignored) >= SPLIT_LINES["train"] // 3
    task.load_dataset("valid")
    with pytest.raises(Exception, match=r"Size of sample #\d+ is invalid"):
        epoch_tokens(task, cfg, task.dataset("valid"), max_positions, ignore_invalid_inputs=False)


def test_fairseqs_default_batch_multiple_would_drop_the_last_batch(long_line_data):
    """Why every config sets `required_batch_size_multiple: 1`: with fairseq's default 8, an epoch's last batch
    is dropped unless its size is a multiple of 8 (here 7 of the 23 valid blocks)."""
    from fairseq import utils

    folder, streams = long_line_data(128)
    cfg, task, model = build_task_and_model("hmlm_tiny", folder, "dataset.required_batch_size_multiple=8")
    max_positions = utils.resolve_max_positions(task.max_positions(), model.max_positions())
    task.load_dataset("valid")
    valid = task.dataset("valid")
    assert len(valid) == 23 and cfg.dataset.batch_size == 16
    _, nsentences = epoch_tokens(task, cfg, valid, max_positions, ignore_invalid_inputs=False)
    assert nsentences == 16


@pytest.mark.parametrize("config", ["hmlm_tiny", "hlm_tiny"])
def test_hydra_train_validates_long_lines_without_skipping(config, long_line_data, tmp_path):
    """The real trainer, validation included, on the long-line folder: all blocks loaded, none skipped."""
    folder, streams = long_line_data(128)
    log = run_cli([
        "fairseq-hydra-train", "--config-dir", REPO / "configs", "--config-name", config, f"task.data={folder}",
        f"checkpoint.save_dir={tmp_path / 'ckpt'}", "optimization.max_update=4", "dataset.validate_interval_updates=2",
        "checkpoint.save_interval_updates=0", "checkpoint.no_save=true", "common.log_interval=1",
    ])
    assert not re.search(r"invalid sizes|will be skipped|is invalid", log), log[-3000:]
    if config == "hmlm_tiny":  # masked_lm logs its block count per split
        for split, stream in streams.items():
            assert re.search(rf"loaded {math.ceil(len(stream) / 127)} blocks from: .*{split}\b", log), log[-3000:]
    assert len(re.findall(r"\| valid on 'valid' subset", log)) >= 2, log[-3000:]

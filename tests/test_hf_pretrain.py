"""fairseq_headless.hf (scripts/pretrain_hf.py): Hugging Face models pretrained by the Trainer on data folders.

Tiny Llama, GPT-NeoX, ModernBERT and BERT configs learn on a sharded prepare_data.py folder, resume from
their checkpoints and reload through the Auto classes with their tokenizer; the data is packed as the
fairseq configs pack it (checked against fairseq's own reader); the id map is tested once; bad input gets
one error: line; and the Hugging Face side imports no fairseq.
"""
import contextlib
import io
import json
import pickle
import random
import re

import numpy as np
import pytest
import torch

from conftest import assert_close_computations
from fairseq_headless import cli
from fairseq_headless.data import cli as prepare_data
from fairseq_headless.data.binarize import ID_OFFSET
from fairseq_headless.hf import objective, pretrain, shapes
from fairseq_headless.hf.data import EOS, PackedBlocks, Specials, open_shards, to_model_ids
from fairseq_headless.hf.tokenizer import build_tokenizer
from test_plugin_registration import fresh_python

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there would their we him been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now").split()
TINY = {  # 2 layers of 32: each family's own config.json keys
    "llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": 64, "rotary_pct": 0.25},
    "modernbert": {"model_type": "modernbert", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "max_position_embeddings": 64, "local_attention": 16},
    "bert": {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0},
}
TASK = {"llama": "clm", "gpt_neox": "clm", "modernbert": "mlm", "bert": "mlm"}
TRAINING = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--per_device_train_batch_size", "16",
            "--tokens_per_sample", "32", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
            "--logging_steps", "5", "--seed", "1"]


def markov_corpus(path, documents: int, seed: int) -> None:
    """Documents of lines from a near-deterministic chain of words (next = 5 * word + {0,1}): learnable fast."""
    rng = random.Random(seed)
    out = []
    for _ in range(documents):
        for _ in range(rng.randint(2, 6)):
            word, words = rng.randrange(len(WORDS)), []
            for _ in range(rng.randint(8, 30)):
                words.append(WORDS[word])
                word = (5 * word + rng.randint(0, 1)) % len(WORDS)
            out.append(" ".join(words))
        out.append("")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def run(main, argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        return cli.run(main, [str(a) for a in argv]), err.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_corpus") / "corpus.txt"
    markov_corpus(path, 150, seed=1)
    return path


@pytest.fixture(scope="module")
def data(corpus):
    """A sentencepiece folder in 2 shards (no pad or mask token: both appended for the model)."""
    out = corpus.parent / "data"
    assert run(prepare_data.main, ["--input", corpus, "--output", out, "--vocab-size", 200, "--licence", "CC0",
                                   "--shards", 2, "--valid-lines", 40])[0] == 0
    return out


@pytest.fixture(scope="module")
def hf_data(corpus):
    """A tokenizer.json folder whose specials are GPT-NeoX's kind: <|endoftext|> and <|padding|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(corpus.read_text().splitlines(), trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|padding|>"]))
    tok.save(str(corpus.parent / "tokenizer.json"))
    out = corpus.parent / "hf_data"
    assert run(prepare_data.main, ["--input", corpus, "--output", out, "--valid-lines", 40,
                                   "--hf-tokenizer", corpus.parent / "tokenizer.json"])[0] == 0
    return out


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    for name, config in TINY.items():
        (root / f"{name}.json").write_text(json.dumps(config))
    return root


def losses(folder, key="loss") -> dict:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h[key] for h in history if key in h}


def pretrain_ok(argv):
    rc, err = run(pretrain.main, argv)
    assert rc == 0, err[-3000:]


# ---------------------------------------------------------------- the id map and the packing


def test_folder_ids_map_to_the_tokenizer_ids(data, hf_data):
    for folder_path, bos, eos, pad in ((data, "<s>", "</s>", "<pad>"), (hf_data, "<|endoftext|>", "<|endoftext|>",
                                                                         "<|padding|>")):
        folder, _ = open_shards(folder_path)
        tokenizer = build_tokenizer(folder, "mlm", 32)
        hf, specials, size = tokenizer.hf, tokenizer.specials, tokenizer.text_vocab_size
        assert (hf.bos_token, hf.eos_token, hf.pad_token, hf.mask_token) == (bos, eos, pad, "<mask>")
        appended = len(tokenizer.appended)
        assert specials.mask == size + appended - 1 and tokenizer.vocab_size == size + appended
        # fairseq's <s> <pad> </s> <unk>, then tokenizer id + 4
        assert to_model_ids([0, 1, 2, 4, 5, size + 3], specials).tolist() == [specials.bos, specials.pad, specials.eos,
                                                                              0, 1, size - 1]
        text = "the of and to in a is that, naturally"
        fairseq_ids = folder.fairseq_encoder()(text)
        assert to_model_ids(fairseq_ids, specials).tolist() == hf(text, add_special_tokens=False)["input_ids"]
        assert hf(text)["input_ids"] == [specials.bos] + to_model_ids(fairseq_ids, specials).tolist() + [specials.eos]
    with pytest.raises(cli.InputError, match="no unknown token"):
        to_model_ids([3], Specials(bos=0, eos=1, pad=2))


@pytest.mark.parametrize("task", ["mlm", "clm"])
def test_packing_keeps_every_token_once_as_fairseq_packs_it(data, task):
    from fairseq.data import TokenBlockDataset, data_utils

    _, shards = open_shards(data)
    assert len(shards) == 2 and open_shards(f"{shards[0]}:{shards[1]}")[1] == shards  # the parent or the list
    samples = PackedBlocks(shards, "train", task, 32)
    copy = pickle.dumps(samples)  # what a spawned data-loader worker gets: the paths, not the data
    assert len(copy) < 4096 and np.array_equal(pickle.loads(copy)[7].tokens, samples[7].tokens)
    starts = list(samples.starts)
    for shard, (first, end) in enumerate(zip(starts, starts[1:])):
        stream = data_utils.load_indexed_dataset(str(shards[shard] / "train"), None)  # fairseq's own reader
        tokens = torch.cat([stream[i] for i in range(len(stream))]).numpy()
        blocks = [samples[i].tokens for i in range(first, end)]
        if task == "mlm":  # <s> + 31 tokens: fairseq's masked_lm (TokenBlockDataset of 31, then <s> prepended)
            assert all(b[0] == 0 for b in blocks) and all(len(b) == 32 for b in blocks[:-1])
            assert np.array_equal(np.concatenate([b[1:] for b in blocks]), tokens)
            fairseq = TokenBlockDataset(stream, stream.sizes, 31, pad=1, eos=EOS, break_mode="none")
            assert all(np.array_equal(b[1:], fairseq[i].numpy()) for i, b in enumerate(blocks))
        else:  # 32 targets and the token before them: language_modeling's (source, target)
            assert all(len(b) == 33 for b in blocks[:-1]) and blocks[0][0] == EOS
            assert np.array_equal(np.concatenate([b[1:] for b in blocks]), tokens)
            fairseq = TokenBlockDataset(stream, stream.sizes, 32, pad=1, eos=EOS, break_mode="none",
                                        include_targets=True)
            for i, b in enumerate(blocks):
                source, target, _ = fairseq[i]
                assert np.array_equal(b[:-1], source.numpy()) and np.array_equal(b[1:], target.numpy())
        assert len(blocks) == len(TokenBlockDataset(stream, stream.sizes, 31 if task == "mlm" else 32, pad=1, eos=EOS,
                                                    break_mode="none"))


# ---------------------------------------------------------------- shapes and models


@pytest.mark.parametrize("name, sizes", [
    # layers, width, heads, KV heads, FFN, vocabulary, tied
    ("bert_small", (4, 512, 8, 8, 2048, 30522, True)),
    ("bert_base", (12, 768, 12, 12, 3072, 30522, True)),
    ("pythia_70m", (6, 512, 8, 8, 2048, 50304, False)),
    ("modernbert_base", (22, 768, 12, 12, 1152, 50368, True)),
    ("smollm2_135m", (30, 576, 9, 3, 1536, 49152, True)),
    ("llama32_1b", (16, 2048, 32, 8, 8192, 128256, True)),
])
def test_built_in_shapes(name, sizes):
    c = shapes.shape_config(name)
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, kv, c.intermediate_size, c.vocab_size,
            c.tie_word_embeddings) == sizes


# ---------------------------------------------------------------- training, resuming, reloading


def check_reload(out, family, data):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    auto = AutoModelForMaskedLM if TASK[family] == "mlm" else AutoModelForCausalLM
    model, tokenizer = auto.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    folder, _ = open_shards(data)
    text = "the of and to in a is that for it"
    ids = to_model_ids(folder.fairseq_encoder()(text), build_tokenizer(folder, TASK[family], 32).specials).tolist()
    encoded = tokenizer(text)["input_ids"]
    assert encoded == ([tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id] if TASK[family] == "mlm" else ids)
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    assert torch.equal(head.weight, embedding)  # the head is e: tied (every architecture here ties)
    assert getattr(head, "bias", None) is None or not head.bias.any()
    if TASK[family] == "clm":  # the whole head is e^T: the scores are the hidden states against e
        batch = torch.tensor([encoded])
        with torch.no_grad():
            hidden = model.base_model(batch).last_hidden_state
            logits = model(batch).logits
        assert_close_computations(logits, hidden @ embedding.T, terms=hidden.size(-1))


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "modernbert", "bert"])
def test_each_family_learns_resumes_and_reloads(family, data, hf_data, configs, tmp_path, one_thread):
    folder = hf_data if family == "gpt_neox" else data
    out = tmp_path / "run"
    argv = ["--model", configs / f"{family}.json", "--data", folder, "--task", TASK[family], "--output_dir", out,
            *TRAINING, "--save_steps", 20, "--eval_strategy", "steps", "--eval_steps", 40, "--eval_on_start", "true",
            "--per_device_train_batch_size", 32 if TASK[family] == "mlm" else 16]  # masked LM scores 15% of them
    pretrain_ok(argv + ["--max_steps", 40])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    valid = losses(out, "eval_loss")  # the validation split, masked the same way at every evaluation
    assert sorted(valid) == [0, 40] and valid[40] < valid[0] - 0.15, valid
    check_reload(out, family, folder)
    first = losses(out)
    pretrain_ok(argv + ["--max_steps", 50])  # resumes from checkpoint-40: only steps 41-50 are new
    resumed = losses(out)
    assert sorted(resumed) == list(range(5, 55, 5)) and {s: resumed[s] for s in first} == first


def test_a_resumed_run_equals_an_uninterrupted_one(data, configs, tmp_path, one_thread):
    from transformers import AutoModelForMaskedLM

    argv = ["--model", configs / "bert.json", "--data", data, "--task", "mlm", *TRAINING, "--save_steps", 6]
    pretrain_ok(argv + ["--output_dir", tmp_path / "whole", "--max_steps", 12])
    pretrain_ok(argv + ["--output_dir", tmp_path / "parts", "--max_steps", 6])
    pretrain_ok(argv + ["--output_dir", tmp_path / "parts", "--max_steps", 12])  # masks seeded by sample, not by call
    whole, parts = (AutoModelForMaskedLM.from_pretrained(tmp_path / name).state_dict() for name in ("whole", "parts"))
    for key, value in whole.items():
        assert_close_computations(parts[key], value, terms=64 * 12, scale=1.0, msg=key)


def test_causal_fine_tuning_of_a_headless_decoder(data, configs, tmp_path, one_thread):
    """Paper §3.3: the LM head gets a parameter of its own, initialised from e, trained by cross-entropy."""
    from transformers import AutoModelForCausalLM

    headless, tuned = tmp_path / "headless", tmp_path / "tuned"
    common = ["--data", data, "--task", "clm", *TRAINING, "--save_strategy", "no"]
    pretrain_ok(["--model", configs / "llama.json", "--output_dir", headless, "--max_steps", 20, *common])
    folder, _ = open_shards(data)
    start = shapes.build_model(str(headless), "clm", "vanilla", build_tokenizer(folder, "clm", 32), untie_head=True)
    assert start.get_output_embeddings().weight is not start.get_input_embeddings().weight
    assert torch.equal(start.get_output_embeddings().weight, start.get_input_embeddings().weight)
    pretrain_ok(["--model", headless, "--output_dir", tuned, "--objective", "vanilla", "--untie_head",
                 "--max_steps", 20, *common])
    model = AutoModelForCausalLM.from_pretrained(tuned)
    assert not model.config.tie_word_embeddings
    moved = (model.get_output_embeddings().weight - start.get_output_embeddings().weight).abs().max()
    assert moved > 1e-3 and not torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)
    curve = losses(tuned)
    assert curve[20] < curve[5], curve


def test_a_head_that_cannot_tie_is_set_to_e_when_saved(data, configs):
    """GPT-NeoX with tie_word_embeddings=false stands for an architecture that cannot tie."""
    folder, _ = open_shards(data)
    config, _ = shapes.read_model_option(str(configs / "gpt_neox.json"))
    model = shapes.build_model(str(configs / "gpt_neox.json"), "clm", "vanilla", build_tokenizer(folder, "clm", 32))
    assert not shapes.is_tied(model) and not torch.equal(model.get_output_embeddings().weight,
                                                         model.get_input_embeddings().weight)
    shapes.head_from_embeddings(model)
    assert not shapes.is_tied(model) and not model.config.tie_word_embeddings
    assert torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)


# ---------------------------------------------------------------- bad input: one error: line


def register_model_without_embeddings():
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

    class Config(PretrainedConfig):
        model_type = "hf_pretrain_test_no_embeddings"

    class Model(PreTrainedModel):
        config_class = Config

        def __init__(self, config):
            super().__init__(config)
            self.layer = torch.nn.Linear(4, 4)

        def get_input_embeddings(self):
            return None

    with contextlib.suppress(ValueError):  # registered by an earlier run in this process
        AutoConfig.register(Config.model_type, Config)
        AutoModelForCausalLM.register(Config, Model)
    return Config.model_type


def test_bad_input_gets_one_error_line(data, hf_data, configs, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    (tmp_path / "none.json").write_text(json.dumps({"model_type": register_model_without_embeddings()}))
    folder, _ = open_shards(data)
    mlm_size = build_tokenizer(folder, "mlm", 32).vocab_size
    BertForMaskedLM(BertConfig(**{k: v for k, v in TINY["bert"].items() if k != "model_type"},
                               vocab_size=mlm_size - 1)).save_pretrained(tmp_path / "no_mask_row")
    saved = tmp_path / "saved"
    pretrain_ok(["--model", configs / "llama.json", "--data", data, "--task", "clm", "--output_dir", saved,
                 "--max_steps", 1, *TRAINING])
    cases = {
        "no input embedding matrix": ["--model", tmp_path / "none.json", "--task", "clm"],
        "--task mlm: .* is a llama model, which has no masked-LM class": ["--model", configs / "llama.json",
                                                                          "--task", "mlm"],
        "--task clm: .* is a bert encoder": ["--model", configs / "bert.json", "--task", "clm"],
        "--task mlm: pythia_70m is a gpt_neox model": ["--model", "pythia_70m", "--task", "mlm"],
        f"its vocabulary has {mlm_size - 1} entries but .* has {mlm_size} .*appends <mask>, which the data folder's "
        f"tokenizer lacks": ["--model", tmp_path / "no_mask_row", "--task", "mlm"],
        "its vocabulary has .* entries but the data folder's tokenizer .* has": ["--model", saved, "--task", "clm",
                                                                                 "--data", hf_data],
        "not a built-in shape": ["--model", "gpt5", "--task", "clm"],
        "--untie_head trains the LM head": ["--model", saved, "--task", "clm", "--untie_head"],
        "--tokens_per_sample 128: more than the model's max_position_embeddings": [
            "--model", configs / "llama.json", "--task", "clm", "--tokens_per_sample", 128],
    }
    for message, argv in cases.items():
        argv = [*argv, "--output_dir", tmp_path / "never", "--use_cpu"]
        if "--data" not in argv:
            argv += ["--data", data]
        rc, err = run(pretrain.main, argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (message, err)
        assert re.search(message, err), (message, err)
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------- no fairseq

HF_MODULES = ["fairseq_headless.hf", *(f"fairseq_headless.hf.{name}" for name in
                                      ("data", "tokenizer", "shapes", "objective", "pretrain"))]


def test_the_script_trains_and_imports_no_fairseq(data, configs, tmp_path):
    out = tmp_path / "run"
    argv = ["--model", str(configs / "llama.json"), "--data", str(data), "--task", "clm", "--output_dir", str(out),
            "--max_steps", "2", *map(str, TRAINING)]
    result = fresh_python(
        "import json, runpy, sys\n"
        "import torch; torch.set_num_threads(1)\n"
        f"modules = {HF_MODULES!r}\n"
        "import importlib; [importlib.import_module(m) for m in modules]\n"
        "seen = {'modules': len(modules), 'imported': 'fairseq' in sys.modules}\n"
        f"sys.argv = ['pretrain_hf.py'] + {argv!r}\n"
        "try:\n"
        "    runpy.run_path('scripts/pretrain_hf.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    seen['exit'] = e.code\n"
        "seen['trained'] = 'fairseq' in sys.modules\n"
        "print(json.dumps(seen))\n")
    assert result == {"modules": len(HF_MODULES), "imported": False, "exit": 0, "trained": False}
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2

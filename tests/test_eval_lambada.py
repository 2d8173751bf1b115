"""fairseq_headless.lambada (scripts/eval_lambada.py): lm-evaluation-harness's lambada_openai on a hand-computed fixture, and end to end
on a fairseq checkpoint and a Hugging Face folder against an unbatched reference computed here."""

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import REPO, build_task_and_model, perplexity_rtol, rounding_bound, write_markov_corpus
from fairseq_headless import lambada as eval_lambada
from helpers.references import to_transformers_key

SCRIPT = REPO / "scripts" / "eval_lambada.py"


def run_script(*args):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------------------------------------
# hand-computed: a character-level bigram "model" with known probabilities

VOCAB = {"<eot>": 0, "<pad>": 1, "a": 2, "b": 3, "c": 4, "d": 5}
UNIFORM = [1 / 6] * 6
NEXT = {  # P(next token | current token), rows over VOCAB's order
    "a": [0.0625, 0.0625, 0.0625, 0.5, 0.0625, 0.25],  # b 0.5 (the argmax), d 0.25
    "b": [0.05, 0.05, 0.05, 0.0, 0.8, 0.05],  # c 0.8 (the argmax)
    "c": [0.0, 0.0, 0.6, 0.0, 0.0, 0.4],  # a 0.6 (the argmax), d 0.4
}


def bigram_scorer(max_length=100, seen=None):
    table = torch.tensor([NEXT.get(token, UNIFORM) for token in VOCAB]).clamp_min(1e-12).log()

    def logits(batch):
        if seen is not None:
            seen.extend(batch.tolist())
        return table[batch]  # log-probabilities are valid logits

    return eval_lambada.Scorer(
        encode=lambda text: [VOCAB[ch] for ch in text if ch != " "], logits=logits,
        eot_id=0, pad_id=1, max_length=max_length,
    )


FIXTURE = [
    "a b",  # continuation " b" = [b] after a: p = 0.5, the argmax -> correct
    "c a d",  # " d" = [d] after a: p = 0.25, b is the argmax -> wrong
    "b cd",  # " cd" = [c, d]: p(c|b) = 0.8 (argmax), p(d|c) = 0.4 (a is the argmax) -> wrong; p = 0.32
]
# accuracy = 1/3; perplexity = exp(-(ln 0.5 + ln 0.25 + ln 0.32) / 3) = (0.04)^(-1/3) = 25^(1/3)
EXPECTED_ACCURACY, EXPECTED_PERPLEXITY = 1 / 3, 25 ** (1 / 3)


def bigram_rtol(perplexity):
    """float32 log-probabilities, a log-softmax over the few ids, a sum over three passages."""
    return rounding_bound(len(VOCAB) + 8, math.log(perplexity))


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_hand_computed_accuracy_and_perplexity(batch_size):
    metrics = eval_lambada.evaluate(bigram_scorer(), FIXTURE, batch_size=batch_size)
    assert metrics["accuracy"] == pytest.approx(EXPECTED_ACCURACY, abs=1e-12)
    assert metrics["perplexity"] == pytest.approx(EXPECTED_PERPLEXITY, rel=bigram_rtol(EXPECTED_PERPLEXITY))


def test_split_and_encode_as_lm_evaluation_harness():
    assert eval_lambada.split_passage("the cat sat") == ("the cat", " sat")
    # split(' '), not split(): a double space leaves the context a trailing space, which moves to the target
    context, continuation = eval_lambada.split_passage("the cat  sat")
    assert (context, continuation) == ("the cat ", " sat")

    def encode(text):  # one id per character
        return [ord(ch) for ch in text]

    assert eval_lambada.encode_pair(encode, context, continuation, eot_id=0) == (encode("the cat"), encode("  sat"))
    # a one-word passage has an empty context: [end-of-text] stands for it
    assert eval_lambada.encode_pair(encode, *eval_lambada.split_passage("sat"), eot_id=0) == ([0], encode(" sat"))


def test_long_passages_are_cut_from_the_left_and_the_last_token_is_not_fed():
    seen = []
    # "ab ab ab ab ab ab ab ab ab cd" -> 20 tokens; with max_length 5 the model reads the last 6 minus one
    metrics = eval_lambada.evaluate(bigram_scorer(max_length=5, seen=seen), ["ab ab ab ab ab ab ab ab ab cd"], 1)
    assert seen == [[VOCAB[ch] for ch in "ababc"]]  # (a b ... a b c d)[-6:] = a b a b c d, minus the last token
    assert metrics["perplexity"] == pytest.approx(1 / 0.32, rel=bigram_rtol(1 / 0.32))  # p(c|b) p(d|c), whatever the cut


# ---------------------------------------------------------------------------------------------
# end to end: a trained tiny Pythia as a fairseq checkpoint and as a Hugging Face folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A BPE tokenizer.json, a prepare_data.py data folder, LAMBADA-style passages, a trained tiny Pythia."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

    root = tmp_path_factory.mktemp("lambada")
    write_markov_corpus(root / "corpus.txt", 400, seed=11)
    write_markov_corpus(root / "heldout.txt", 12, seed=12)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-NeoX style: " w12"
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train([str(root / "corpus.txt")], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(root / "tokenizer.json"))
    data = root / "data"
    subprocess.run([sys.executable, REPO / "scripts" / "prepare_data.py", "--input", root / "corpus.txt",
                    "--output", data, "--hf-tokenizer", root / "tokenizer.json", "--workers", "1"],
                   check=True, capture_output=True, cwd=REPO)
    passages = [line for line in (root / "heldout.txt").read_text().splitlines() if line.strip()]
    (root / "lambada.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))

    # A tiny Pythia trained for a moment on the corpus, so that some last words are predicted.
    torch.manual_seed(0)
    cfg, task, model = build_task_and_model("lm_pythia_tiny", data, "checkpoint.no_save_optimizer_state=true")
    eos = task.source_dictionary.eos()
    stream = [i for line in (root / "corpus.txt").read_text().splitlines()
              for i in [t + 4 for t in tokenizer.encode(line).ids] + [eos]]
    blocks = torch.tensor(stream[: len(stream) // 65 * 65]).view(-1, 65)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(30):
        batch = blocks[torch.randint(len(blocks), (16,))]
        logits = model(batch[:, :-1])[0]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    model.eval()

    from fairseq.trainer import Trainer

    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    trainer.save_checkpoint(str(root / "checkpoint.pt"), {"train_iterator": {"epoch": 1}})
    return {"root": root, "data": data, "passages": passages, "tokenizer": tokenizer, "model": model,
            "cfg": cfg.model}


def reference(logits_fn, encode, passages):
    """Unbatched, one passage at a time: (accuracy, perplexity) as lambada_openai defines them."""
    lls, correct = [], 0
    for text in passages:
        context, word = text.rsplit(" ", 1)
        context_ids = encode(context)
        continuation_ids = encode(context + " " + word)[len(context_ids):]
        ids = context_ids + continuation_ids
        with torch.no_grad():
            log_probs = torch.log_softmax(logits_fn(torch.tensor([ids[:-1]]))[0].double(), dim=-1)
        rows = log_probs[len(context_ids) - 1:]
        lls.append(sum(rows[j, t].item() for j, t in enumerate(continuation_ids)))
        correct += all(rows[j].argmax().item() == t for j, t in enumerate(continuation_ids))
    return correct / len(passages), math.exp(-sum(lls) / len(lls))


def lambada_rtol(workspace, perplexity):
    cfg, length = workspace["cfg"], max(len(workspace["tokenizer"].encode(p).ids) for p in workspace["passages"])
    return perplexity_rtol(cfg.decoder_layers, cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim, length,
                           workspace["tokenizer"].get_vocab_size(), perplexity)


def test_fairseq_checkpoint_end_to_end(workspace, tmp_path):
    out = tmp_path / "lambada.json"
    code, stdout, stderr = run_script("--model", workspace["root"] / "checkpoint.pt", "--data",
                                      workspace["root"] / "lambada.jsonl", "--output", out, "--batch-size", 5)
    assert code == 0, stderr[-3000:]
    result = json.loads(out.read_text())
    tokenizer = workspace["tokenizer"]
    accuracy, perplexity = reference(lambda ids: workspace["model"](ids)[0],
                                     lambda text: [t + 4 for t in tokenizer.encode(text).ids], workspace["passages"])
    assert result["passages"] == len(workspace["passages"]) == 12
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12) and 0 < accuracy < 1
    # batched and padded against one passage at a time: other kernels, the same sums
    assert result["perplexity"] == pytest.approx(perplexity, rel=lambada_rtol(workspace, perplexity))
    assert result["task"] == "lambada_openai" and "accuracy" in stdout

    # refuses to overwrite; a data folder without the tokenizer's manifest is one error line
    code, _, stderr = run_script("--model", workspace["root"] / "checkpoint.pt", "--data",
                                 workspace["root"] / "lambada.jsonl", "--output", out)
    assert code == 2 and stderr.count("\n") == 1 and "--force" in stderr
    code, _, stderr = run_script("--model", workspace["root"] / "checkpoint.pt", "--data",
                                 workspace["root"] / "lambada.jsonl", "--data-bin", tmp_path)
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1 and "manifest.json" in stderr


def test_huggingface_folder_end_to_end(workspace, tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    # The fairseq model's weights with the tokenizer's rows (fairseq id = tokenizer id + 4).
    cfg, tokenizer = workspace["cfg"], workspace["tokenizer"]
    vocab = tokenizer.get_vocab_size()
    hf = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=vocab, hidden_size=cfg.decoder_embed_dim, num_hidden_layers=cfg.decoder_layers,
        num_attention_heads=cfg.decoder_attention_heads, intermediate_size=cfg.decoder_ffn_embed_dim,
        max_position_embeddings=cfg.max_target_positions, rotary_pct=cfg.rotary_pct, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0,
    ))
    state = {to_transformers_key(k): v for k, v in workspace["model"].state_dict().items()}
    for key in ("gpt_neox.embed_in.weight", "lm_head.weight"):
        state[key] = state[key][4:4 + vocab]
    hf.load_state_dict(state, strict=False)
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(folder)

    out = tmp_path / "lambada.json"
    code, _, stderr = run_script("--model", folder, "--data", workspace["root"] / "lambada.jsonl", "--output", out,
                                 "--batch-size", 4)
    assert code == 0, stderr[-3000:]
    result = json.loads(out.read_text())
    hf.eval()
    accuracy, perplexity = reference(lambda ids: hf(ids).logits, lambda text: tokenizer.encode(text).ids,
                                     workspace["passages"])
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12) and 0 < accuracy < 1
    assert result["perplexity"] == pytest.approx(perplexity, rel=lambada_rtol(workspace, perplexity))
    assert result["max_length"] == 2048


@pytest.mark.parametrize("case", ["no_data", "bad_json", "no_text", "no_model", "hf_with_data_bin"])
def test_bad_input_is_one_error_line_and_exit_code_2(case, tmp_path):
    data = tmp_path / "lambada.jsonl"
    data.write_text({"bad_json": "{oops\n", "no_text": '{"passage": "a b"}\n'}.get(case, '{"text": "a b"}\n'))
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    args = {
        "no_data": ["--model", model, "--data", tmp_path / "missing.jsonl"],
        "bad_json": ["--model", model, "--data", data],
        "no_text": ["--model", model, "--data", data],
        "no_model": ["--model", tmp_path / "nothing", "--data", data],
        "hf_with_data_bin": ["--model", tmp_path, "--data", data, "--data-bin", tmp_path],
    }[case]
    if case == "hf_with_data_bin":
        (tmp_path / "config.json").write_text("{}")
    code, stdout, stderr = run_script(*args)
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr

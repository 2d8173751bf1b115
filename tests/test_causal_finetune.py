"""The causal fine-tuning stage (§3.3, §4.2) and Tab.3's zero-cost "Headless" row, through the real CLIs:
a headless checkpoint loads into the vanilla model with its LM head = a copy of e (so step 0 scores as
e^T), fine-tuning lowers the loss, and fairseq-eval-lm scores headless (e^T) and fine-tuned checkpoints."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, assert_close_computations, build_task_and_model, rounding_bound, run_cli
from helpers.training import train_losses

from fairseq_headless.criterions.cwt_criterion import input_embeddings

# (headless pretraining config, fine-tuning config, head key, embedding key)
FAMILIES = {
    "pythia": ("hlm_pythia_tiny", "hlm_pythia_tiny_ft", "decoder.embed_out.weight", "decoder.embed_in.weight"),
    "gpt2": ("hlm_tiny", "hlm_tiny_ft", "decoder.output_projection.weight", "decoder.embed_tokens.weight"),
}
FAST = ["common.log_interval=5", "dataset.validate_interval_updates=0", "checkpoint.save_interval_updates=0"]


@pytest.fixture(scope="module")
def headless_checkpoints(hlm_pythia_tiny_run, hlm_tiny_run):
    """A headless checkpoint per family, each pretrained with CWT by fairseq-hydra-train (conftest's session runs)."""
    return {"pythia": hlm_pythia_tiny_run.checkpoint, "gpt2": hlm_tiny_run.checkpoint}


def test_headless_pythia_pretrains_with_the_cli_and_saves_no_head(hlm_pythia_tiny_run):
    losses = train_losses(hlm_pythia_tiny_run.log)
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5, losses
    keys = torch.load(hlm_pythia_tiny_run.checkpoint, map_location="cpu", weights_only=False)["model"]
    assert "decoder.embed_in.weight" in keys and not [k for k in keys if "embed_out" in k]


def load_checkpoint(path):
    from fairseq import checkpoint_utils

    [model], cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
    return model.eval(), cfg, task


@pytest.mark.parametrize("family", FAMILIES)
def test_a_headless_checkpoint_loads_with_an_untied_head_copied_from_the_embeddings(
    family, headless_checkpoints, tiny_data
):
    from fairseq import checkpoint_utils

    _, ft_config, head_key, embedding_key = FAMILIES[family]
    state = checkpoint_utils.load_checkpoint_to_cpu(str(headless_checkpoints[family]))
    assert head_key not in state["model"]
    cfg, task, model = build_task_and_model(ft_config, tiny_data)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)  # as fairseq's trainer loads
    params = dict(model.named_parameters())
    head, embeddings = params[head_key], params[embedding_key]
    assert torch.equal(head, embeddings) and head.data_ptr() != embeddings.data_ptr()

    # step 0: the fine-tuning model's logits are the headless model's e^T scores (the same body, then the
    # head's linear kernel against a plain matmul: each logit a dot product of D terms)
    headless, _, _ = load_checkpoint(headless_checkpoints[family])
    model.eval()
    tokens = torch.randint(4, len(task.source_dictionary), (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = headless(tokens, features_only=True)[0]
        embeddings = input_embeddings(headless).weight
        scale = (features.abs().max() * embeddings.abs().max() * features.size(-1)).item()  # bounds sum|f_i e_i|
        assert_close_computations(model(tokens)[0], features @ embeddings.T, terms=features.size(-1), scale=scale)

    # untied: one cross-entropy step moves the head and the embeddings apart
    model.train()
    logits = model(tokens[:, :-1])[0]
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    assert not torch.equal(head, embeddings)


def eval_lm_loss(data, checkpoint):
    """fairseq-eval-lm's loss (base 2) on the valid split, blocks of 128 tokens scored independently."""
    log = run_cli([
        "fairseq-eval-lm", data, "--path", checkpoint, "--user-dir", REPO / "fairseq_headless",
        "--gen-subset", "valid", "--tokens-per-sample", "128", "--sample-break-mode", "none",
        "--context-window", "0", "--batch-size", "8", "--num-workers", "0",
    ])
    return float(re.search(r"Loss \(base 2\): ([\d.]+)", log).group(1)), log


def valid_loss_by_hand(checkpoint, data, logits_fn):
    """Mean next-token NLL (base 2) over the valid blocks the checkpoint's task makes, one block at a time."""
    from fairseq import tasks

    model, cfg, _ = load_checkpoint(checkpoint)
    cfg.task.data = str(data)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    dataset, pad = task.dataset("valid"), task.source_dictionary.pad()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            log_probs = torch.log_softmax(logits_fn(model, item["source"][None])[0].double(), dim=-1)
            scored = item["target"].ne(pad)
            total -= log_probs[scored].gather(1, item["target"][scored, None]).sum().item()
            count += int(scored.sum())
    assert count > 1000
    return total / count / math.log(2), count, len(task.source_dictionary)


def assert_same_eval_lm_loss(reported, by_hand):
    """fairseq-eval-lm prints 4 decimals (half a unit: 5e-5); its float32 log-softmax over V rows and its
    sum over the tokens round in another order than the float64 ones by hand."""
    loss, count, vocab = by_hand
    assert reported == pytest.approx(loss, abs=5e-5 + rounding_bound(vocab + count, loss))


def test_eval_lm_scores_a_headless_checkpoint_with_e_transpose(headless_checkpoints, tiny_data):
    """Tab.3's "Headless" row: no fine-tuning, the input embeddings as the output head."""
    reported, _ = eval_lm_loss(tiny_data, headless_checkpoints["pythia"])
    by_hand = valid_loss_by_hand(
        headless_checkpoints["pythia"], tiny_data,
        lambda model, tokens: model(tokens, features_only=True)[0] @ model.decoder.embed_in.weight.T,
    )
    assert_same_eval_lm_loss(reported, by_hand)


def test_finetuning_from_a_headless_checkpoint_learns(headless_checkpoints, tiny_data, tmp_path):
    """The whole stage with fairseq-hydra-train: checkpoint.finetune_from_model=HEADLESS.pt is the one switch.
    (The GPT-2 family goes through the same trainer path; its loading is tested above.)"""
    _, ft_config, head_key, _ = FAMILIES["pythia"]
    save_dir = tmp_path / "ft"
    log = run_cli([
        "fairseq-hydra-train", "--config-dir", REPO / "configs", "--config-name", ft_config,
        f"task.data={tiny_data}", f"checkpoint.save_dir={save_dir}",
        f"checkpoint.finetune_from_model={headless_checkpoints['pythia']}", *FAST,
        "optimization.max_update=20", "lr_scheduler.warmup_updates=5", "optimization.lr=[0.003]",
    ])
    assert "loading pretrained model from" in log and f"{head_key} is not in the checkpoint (headless)" in log
    losses = train_losses(log)
    assert len(losses) == 4 and sum(losses[-2:]) / 2 < losses[0] - 0.1, losses
    state = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert head_key in state["model"] and state["cfg"]["criterion"]["_name"] == "cross_entropy"

    # fairseq-eval-lm on the fine-tuned (vanilla) checkpoint scores with its own head
    reported, _ = eval_lm_loss(tiny_data, save_dir / "checkpoint_last.pt")
    by_hand = valid_loss_by_hand(save_dir / "checkpoint_last.pt", tiny_data, lambda model, tokens: model(tokens)[0])
    assert_same_eval_lm_loss(reported, by_hand)


def test_an_untied_model_refuses_a_tied_head_and_names_the_tied_one(tiny_data):
    """gpt2_<shape>_untied with the head tied again would fine-tune the embedding matrix itself."""
    with pytest.raises(ValueError, match=r"gpt2_tiny_untied fine-tunes an untied head; use the tied model \(gpt2_tiny\)"):
        build_task_and_model("hlm_tiny_ft", tiny_data, "+model.share_decoder_input_output_embed=true")

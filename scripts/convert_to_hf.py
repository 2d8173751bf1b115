#!/usr/bin/env python
"""Export a fairseq-headless checkpoint to a Hugging Face folder, and prove both compute the same numbers.

The paper evaluates every pretrained model with Hugging Face tooling: GLUE fine-tuning of the
encoders (§4.1, App. E), XNLI (§5), LAMBADA and the LM Evaluation Harness for the decoders (§4.2).
This script is the bridge, in the tradition of transformers' ``convert_*_checkpoint`` scripts:
load the fairseq checkpoint, map its weights through one visible table per architecture family,
save, reload with the Auto classes and compare outputs with the fairseq model (fp32, max abs
difference <= 1e-4, or the script fails).

    python scripts/convert_to_hf.py --checkpoint CKPT --output DIR [--data DATA_DIR] [--tokenizer FILE...] [--force]

| fairseq model                                           | Hugging Face class                   |
| roberta / headless_roberta (base, small, multilingual, tiny) | RobertaForMaskedLM (vanilla: its trained head) / RobertaModel (headless) |
| transformer_lm shapes: gpt2_*, headless_gpt2_*, headless_transformer_lm | GPT2LMHeadModel (headless: head = e^T, tied to wte) |
| GPT-NeoX: pythia_*, headless_pythia_*                   | GPTNeoXForCausalLM (headless: head = e^T, tied to embed_in) |

The tokenizer comes from the checkpoint's data folder (``task.data``, its first shard if a colon
list, or ``--data``; ``--tokenizer`` for a folder binarized by fairseq-preprocess): its
``tokenizer/`` file is rebuilt as a Hugging Face fast tokenizer whose ids are the fairseq
dictionary's (tokenizer id + 4 after <s> <pad> </s> <unk>, then the madeupword padding rows, then
<mask> for encoders), and checked against the preprocessing path (scripts/prepare_data.py).
Bad input ends with one ``error:`` line and exit code 2; a failed parity check with exit code 1;
either way nothing is left behind. See docs/export.md.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, when run from a checkout
logging.getLogger("fairseq").setLevel(logging.WARNING)  # the package imports fairseq; stderr is for errors
# The preprocessing path (scripts/prepare_data.py's package) and the reader of data folders.
from fairseq_headless.data.binarize import FAIRSEQ_SPECIALS, ID_OFFSET  # noqa: E402
from fairseq_headless.data.errors import DataError  # noqa: E402
from fairseq_headless.data.folder import DataFolder, open_data_folder  # noqa: E402
from fairseq_headless.data.prepare import publish  # noqa: E402
from fairseq_headless.data.tokenizer import (  # noqa: E402
    GPT2BPETokenizer, SentencePieceTokenizer, iter_proto_fields as _iter_proto_fields,
)

TOLERANCE = 1e-4  # max abs difference, fp32, fairseq vs Hugging Face
PARITY_BATCH, PARITY_MAX_LENGTH = 2, 512
TOKENIZER_CHECK_LINES = 500
SPECIALS = list(FAIRSEQ_SPECIALS)  # <s> <pad> </s> <unk>, fairseq ids 0..3
MASK = "<mask>"
# Tokenizer entries whose text is a fairseq special get this prefix in the exported vocabulary
# (sentencepiece's own <unk>, <s>, </s> become fairseq ids 4, 5, 6 and need names of their own).
RENAMED_PREFIX = "tokenizer:"
# fairseq activation name -> transformers ACT2FN name. gelu_accurate is the tanh approximation,
# transformers' gelu_new; fairseq's plain gelu is the exact erf GELU, transformers' gelu.
ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new", "relu": "relu",
               "tanh": "tanh", "linear": "linear"}
SAMPLE_TEXT = [  # always checked, beside the decoded validation lines of the data folder
    "Headless language models learn without predicting.",
    "  Spaces  at both ends,\tand a tab.  ",
    "Numbers 1790-2021, 3.14 and 50,304; symbols: (a) [b] {c} #1 @x $5 % & * + = ? !",
    "Accents and scripts: café, naïve, Ångström, Straße, 東京, Москва, القاهرة, हिन्दी.",
]


class ExportError(Exception):
    """Bad input: main() prints `error: <message>` and returns 2."""


class ParityError(Exception):
    """The exported model or tokenizer does not reproduce fairseq: main() returns 1."""


def log(message: str) -> None:
    print(f"[convert] {message}", flush=True)


# --------------------------------------------------------------------------
# weights: one key table per family
# --------------------------------------------------------------------------
# A row maps one Hugging Face module (or tensor) to fairseq ones: (hf, fairseq, how). When
# `fairseq` names modules, the row applies to their `.weight` and `.bias`. `{i}` is the layer.

def same(name, tensors):
    return tensors[0]


def conv1d(name, tensors):
    # GPT-2's Conv1D stores Linear weights transposed: (in, out).
    return tensors[0].t().contiguous() if name == "weight" else tensors[0]


def fused_qkv(name, tensors):
    import torch

    # GPT-2's c_attn is the q, k and v projections side by side.
    return conv1d(name, [torch.cat(tensors, dim=0)])


def learned_positions_from_2(name, tensors):
    # fairseq numbers positions from padding_idx + 1 = 2; GPT-2 from 0.
    return tensors[0][2:]


ROBERTA_TABLE = [  # HF keys relative to RobertaModel
    ("embeddings.word_embeddings", "encoder.sentence_encoder.embed_tokens", same),
    # HF RoBERTa numbers positions from padding_idx + 1, like fairseq: the same rows.
    ("embeddings.position_embeddings", "encoder.sentence_encoder.embed_positions", same),
    ("embeddings.LayerNorm", "encoder.sentence_encoder.layernorm_embedding", same),
    ("encoder.layer.{i}.attention.self.query", "encoder.sentence_encoder.layers.{i}.self_attn.q_proj", same),
    ("encoder.layer.{i}.attention.self.key", "encoder.sentence_encoder.layers.{i}.self_attn.k_proj", same),
    ("encoder.layer.{i}.attention.self.value", "encoder.sentence_encoder.layers.{i}.self_attn.v_proj", same),
    ("encoder.layer.{i}.attention.output.dense", "encoder.sentence_encoder.layers.{i}.self_attn.out_proj", same),
    ("encoder.layer.{i}.attention.output.LayerNorm", "encoder.sentence_encoder.layers.{i}.self_attn_layer_norm", same),
    ("encoder.layer.{i}.intermediate.dense", "encoder.sentence_encoder.layers.{i}.fc1", same),
    ("encoder.layer.{i}.output.dense", "encoder.sentence_encoder.layers.{i}.fc2", same),
    ("encoder.layer.{i}.output.LayerNorm", "encoder.sentence_encoder.layers.{i}.final_layer_norm", same),
]
ROBERTA_LM_HEAD_TABLE = [  # RobertaForMaskedLM's head, full keys
    ("lm_head.dense", "encoder.lm_head.dense", same),
    ("lm_head.layer_norm", "encoder.lm_head.layer_norm", same),
    ("lm_head.decoder", "encoder.lm_head", same),  # weight (tied to the embeddings unless untied) and bias
    ("lm_head.bias", "encoder.lm_head.bias", same),  # transformers keeps the bias under both names
]
GPT2_TABLE = [  # HF keys relative to GPT2Model
    ("wte", "decoder.embed_tokens", same),
    ("wpe", "decoder.embed_positions", learned_positions_from_2),
    ("h.{i}.ln_1", "decoder.layers.{i}.self_attn_layer_norm", same),
    ("h.{i}.attn.c_attn", ("decoder.layers.{i}.self_attn.q_proj", "decoder.layers.{i}.self_attn.k_proj",
                           "decoder.layers.{i}.self_attn.v_proj"), fused_qkv),
    ("h.{i}.attn.c_proj", "decoder.layers.{i}.self_attn.out_proj", conv1d),
    ("h.{i}.ln_2", "decoder.layers.{i}.final_layer_norm", same),
    ("h.{i}.mlp.c_fc", "decoder.layers.{i}.fc1", conv1d),
    ("h.{i}.mlp.c_proj", "decoder.layers.{i}.fc2", conv1d),
    ("ln_f", "decoder.layer_norm", same),
]
GPT_NEOX_TABLE = [  # HF keys relative to GPTNeoXForCausalLM: the plugin's names are GPT-NeoX's
    ("gpt_neox.embed_in", "decoder.embed_in", same),
    ("gpt_neox.layers.{i}.input_layernorm", "decoder.layers.{i}.input_layernorm", same),
    ("gpt_neox.layers.{i}.post_attention_layernorm", "decoder.layers.{i}.post_attention_layernorm", same),
    # fused QKV in GPT-NeoX's own layout, [heads, 3, head_dim]: no reshaping
    ("gpt_neox.layers.{i}.attention.query_key_value", "decoder.layers.{i}.attention.query_key_value", same),
    ("gpt_neox.layers.{i}.attention.dense", "decoder.layers.{i}.attention.dense", same),
    ("gpt_neox.layers.{i}.mlp.dense_h_to_4h", "decoder.layers.{i}.mlp.dense_h_to_4h", same),
    ("gpt_neox.layers.{i}.mlp.dense_4h_to_h", "decoder.layers.{i}.mlp.dense_4h_to_h", same),
    ("gpt_neox.final_layer_norm", "decoder.final_layer_norm", same),
    # Pythia's checkpoints call the head `embed_out`; transformers 5 calls it `lm_head`.
    ("lm_head", "decoder.embed_out", same),
]


def map_weights(table, state: dict, layers: int, hf_prefix: str = "") -> tuple[dict, set]:
    """HF state dict from the fairseq one through `table`; also returns the fairseq keys used."""
    out, used = {}, set()
    for hf, fairseq, how in table:
        for i in (range(layers) if "{i}" in hf else [None]):
            sources = [s.format(i=i) for s in ((fairseq,) if isinstance(fairseq, str) else fairseq)]
            if all(s in state for s in sources):  # a row naming tensors
                out[hf_prefix + hf.format(i=i)] = how("tensor", [state[s] for s in sources])
                used.update(sources)
                continue
            for name in ("weight", "bias"):
                keys = [f"{s}.{name}" for s in sources]
                if all(k in state for k in keys):
                    out[f"{hf_prefix}{hf.format(i=i)}.{name}"] = how(name, [state[k] for k in keys])
                    used.update(keys)
    return out, used


# --------------------------------------------------------------------------
# families: what each fairseq model becomes
# --------------------------------------------------------------------------

@dataclass
class Export:
    config: object  # a transformers PretrainedConfig
    hf_class: str  # transformers class holding the weights
    auto_class: str  # the Auto class that reloads it for the parity check
    weights: dict  # HF key -> tensor
    used: set  # fairseq keys consumed
    tied: dict  # fairseq key -> fairseq key it duplicates (tied heads: checked equal, not exported)
    head: str  # for the model card
    encoder: bool
    max_length: int


def _activation(fairseq_name: str, what: str) -> str:
    if fairseq_name not in ACTIVATIONS:
        raise ExportError(f"{what} uses activation `{fairseq_name}`, which has no transformers equivalent "
                          f"(supported: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[fairseq_name]


def _refuse(arch: str, hf_class: str, problems: list[str]) -> None:
    if problems:
        raise ExportError(f"architecture `{arch}` cannot be expressed as {hf_class}: " + "; ".join(problems))


def roberta_export(model, task, arch: str) -> Export:
    from fairseq.modules import LearnedPositionalEmbedding
    from transformers import RobertaConfig

    body, cfg = model.encoder.sentence_encoder, model.encoder.sentence_encoder.cfg
    head = getattr(model.encoder, "lm_head", None)
    vanilla = head is not None
    _refuse(arch, "RobertaForMaskedLM" if vanilla else "RobertaModel", [reason for bad, reason in [
        (cfg.encoder.normalize_before, "pre-LayerNorm blocks (encoder_normalize_before; HF RoBERTa is post-LN)"),
        (body.layernorm_embedding is None, "no embedding LayerNorm (HF RoBERTa always has one)"),
        (body.embed_scale != 1.0, "scaled embeddings (no_scale_embedding=false)"),
        (not isinstance(body.embed_positions, LearnedPositionalEmbedding), "no learned positions"),
        (vanilla and cfg.activation_fn != "gelu", "an LM head with activation other than exact gelu"),
        (bool(model.classification_heads), "fine-tuned classification heads (export the pretrained model)"),
        (body.padding_idx != 1, f"padding index {body.padding_idx} (HF RoBERTa positions assume 1)"),
    ] if bad])
    state = model.state_dict()
    rows, dim = body.embed_tokens.weight.shape
    config = RobertaConfig(
        vocab_size=rows, hidden_size=dim, num_hidden_layers=len(body.layers),
        num_attention_heads=cfg.encoder.attention_heads, intermediate_size=cfg.encoder.ffn_embed_dim,
        hidden_act=_activation(cfg.activation_fn, arch), hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=body.embed_positions.weight.shape[0],
        type_vocab_size=1, layer_norm_eps=body.layernorm_embedding.eps,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, tie_word_embeddings=True)
    prefix = "roberta." if vanilla else ""
    weights, used = map_weights(ROBERTA_TABLE, state, len(body.layers), prefix)
    # fairseq has no segment embeddings: a zero row adds nothing, as in fairseq.
    weights[prefix + "embeddings.token_type_embeddings.weight"] = state[
        "encoder.sentence_encoder.embed_tokens.weight"].new_zeros(1, dim)
    tied = {}
    if vanilla:
        head_weights, head_used = map_weights(ROBERTA_LM_HEAD_TABLE, state, 0)
        weights.update(head_weights)
        used |= head_used
        config.tie_word_embeddings = head.weight is body.embed_tokens.weight
    return Export(config, "RobertaForMaskedLM" if vanilla else "RobertaModel",
                  "AutoModelForMaskedLM" if vanilla else "AutoModel", weights, used, tied,
                  head=("trained masked-LM head (dense + gelu + LayerNorm + "
                        + ("decoder tied to the input embeddings)" if config.tie_word_embeddings else "untied decoder)"))
                  if vanilla else "none (headless): vocabulary scores are hidden @ word_embeddings^T (e^T)",
                  encoder=True, max_length=body.embed_positions.weight.shape[0] - 2)


def gpt2_export(model, task, arch: str) -> Export:
    from fairseq.modules import LearnedPositionalEmbedding
    from transformers import GPT2Config

    dec, cfg = model.decoder, model.decoder.cfg
    layer = dec.layers[0]
    _refuse(arch, "GPT2LMHeadModel", [reason for bad, reason in [
        (not cfg.decoder.normalize_before, "post-LayerNorm blocks (decoder_normalize_before=false; GPT-2 is pre-LN)"),
        (not isinstance(dec.embed_positions, LearnedPositionalEmbedding),
         "sinusoidal or no positions (decoder_learned_pos=false; GPT-2 has learned positions)"),
        (dec.embed_scale != 1.0, "scaled embeddings (no_scale_embedding=false)"),
        (dec.layer_norm is None, "no final LayerNorm (no_decoder_final_norm)"),
        (dec.layernorm_embedding is not None, "an embedding LayerNorm (layernorm_embedding)"),
        (dec.project_in_dim is not None or dec.project_out_dim is not None,
         "decoder_input_dim / decoder_output_dim differ from decoder_embed_dim"),
        (dec.adaptive_softmax is not None, "an adaptive softmax"),
        (any(getattr(layer, m, None) is not None for m in ("attn_ln", "c_attn", "ffn_layernorm", "w_resid")),
         "NormFormer options (scale_attn / scale_heads / scale_fc / scale_resids)"),
        (dec.padding_idx != 1, f"padding index {dec.padding_idx}"),
    ] if bad])
    state = model.state_dict()
    rows, dim = dec.embed_tokens.weight.shape
    headless = dec.output_projection is None
    tied_head = headless or dec.output_projection.weight is dec.embed_tokens.weight
    add_bos = bool(getattr(task.cfg, "add_bos_token", False))
    bos = 0 if add_bos else 2  # fairseq conditions generation on </s> unless add_bos_token
    config = GPT2Config(
        vocab_size=rows, n_positions=dec.embed_positions.weight.shape[0] - 2, n_embd=dim,
        n_layer=len(dec.layers), n_head=cfg.decoder.attention_heads, n_inner=cfg.decoder.ffn_embed_dim,
        activation_function=_activation(cfg.activation_fn, arch), resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.attention_dropout, layer_norm_epsilon=dec.layer_norm.eps,
        bos_token_id=bos, eos_token_id=2, pad_token_id=1, tie_word_embeddings=tied_head)
    weights, used = map_weights(GPT2_TABLE, state, len(dec.layers), "transformer.")
    tied = {}
    if headless:  # e^T: exactly the logits of HeadlessTransformerDecoder.output_layer
        weights["lm_head.weight"] = state["decoder.embed_tokens.weight"]
    elif tied_head:
        weights["lm_head.weight"] = state["decoder.embed_tokens.weight"]
        tied["decoder.output_projection.weight"] = "decoder.embed_tokens.weight"
    else:  # e.g. a headless model after causal fine-tuning: a head of its own
        weights["lm_head.weight"] = state["decoder.output_projection.weight"]
        used.add("decoder.output_projection.weight")
    head = ("none (headless): the head is e^T, tied to wte" if headless else
            "trained LM head tied to the input embeddings" if tied_head else "trained LM head, untied")
    return Export(config, "GPT2LMHeadModel", "AutoModelForCausalLM", weights, used, tied, head,
                  encoder=False, max_length=config.n_positions)


def gpt_neox_export(model, task, arch: str) -> Export:
    from transformers import GPTNeoXConfig

    dec = model.decoder
    attention = dec.layers[0].attention
    rows, dim = dec.embed_in.weight.shape
    headless = dec.embed_out is None
    add_bos = bool(getattr(task.cfg, "add_bos_token", False))
    config = GPTNeoXConfig(
        vocab_size=rows, hidden_size=dim, num_hidden_layers=len(dec.layers),
        num_attention_heads=attention.num_heads, intermediate_size=dec.layers[0].mlp.dense_h_to_4h.out_features,
        max_position_embeddings=dec.max_target_positions, rotary_pct=attention.rotary_dim / attention.head_dim,
        rotary_emb_base=attention.rotary_base, layer_norm_eps=dec.final_layer_norm.eps, hidden_act="gelu",
        use_parallel_residual=dec.layers[0].use_parallel_residual, attention_bias=True,
        hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=headless,
        bos_token_id=0 if add_bos else 2, eos_token_id=2, pad_token_id=1)
    weights, used = map_weights(GPT_NEOX_TABLE, model.state_dict(), len(dec.layers))
    if headless:  # e^T: exactly the logits of the headless decoder's output_layer
        weights["lm_head.weight"] = weights["gpt_neox.embed_in.weight"]
    head = "none (headless): the head is e^T, tied to embed_in" if headless else "trained LM head, untied (Pythia)"
    return Export(config, "GPTNeoXForCausalLM", "AutoModelForCausalLM", weights, used, {}, head,
                  encoder=False, max_length=dec.max_target_positions)


@dataclass
class Family:
    name: str
    fairseq_model: str  # "module:Class"; an isinstance check selects the family (first match wins)
    export: Callable


FAMILIES = [
    Family("roberta", "fairseq.models.roberta:RobertaModel", roberta_export),
    Family("gpt2", "fairseq.models.transformer_lm:TransformerLanguageModel", gpt2_export),
    Family("gpt_neox", "fairseq_headless.models.gpt_neox:GPTNeoXLanguageModel", gpt_neox_export),
]


def family_of(model, arch: str) -> Family:
    import importlib

    for family in FAMILIES:
        module, cls = family.fairseq_model.split(":")
        if isinstance(model, getattr(importlib.import_module(module), cls)):
            return family
    raise ExportError(f"architecture `{arch}` ({type(model).__name__}) has no Hugging Face export; supported "
                      f"families: " + ", ".join(f"{f.name} ({f.fairseq_model.split(':')[1]})" for f in FAMILIES))


# --------------------------------------------------------------------------
# checkpoint and data folder
# --------------------------------------------------------------------------

def load_checkpoint(path: Path, data: Path | None):
    """fairseq's own loader (config upgrades, --data override), with torch.load forced to
    weights_only: tensors and plain containers only, no pickled code runs."""
    import torch
    from fairseq import checkpoint_utils

    if not path.is_file():
        raise ExportError(f"--checkpoint {path}: file not found")
    safe_load = functools.partial(torch.load, weights_only=True)
    try:
        # argparse.Namespace: the `args` of checkpoints written before fairseq's hydra configs.
        with mock.patch.object(torch, "load", safe_load), torch.serialization.safe_globals([argparse.Namespace]):
            state = checkpoint_utils.load_checkpoint_to_cpu(
                str(path), arg_overrides={"data": str(data)} if data else None)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError... for bad files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if zipfile.is_zipfile(path) and "Weights only load failed" in str(e):
            unsafe = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) or first
            raise ExportError(f"--checkpoint {path}: holds pickled objects that weights_only loading refuses "
                              f"({unsafe}); re-save it with tensors and plain containers only") from None
        raise ExportError(f"--checkpoint {path}: not a readable fairseq checkpoint (truncated or corrupt?): "
                          f"{type(e).__name__}: {first}") from None
    if state.get("cfg") is None or "model" not in state:
        raise ExportError(f"--checkpoint {path}: no model config or weights in it; is it a fairseq checkpoint?")
    return state


def read_data_folder(cfg, data_option: Path | None, tokenizer: tuple = ()) -> DataFolder:
    """The data folder of the checkpoint (task.data, its shard0 if a colon list) or --data."""
    data = data_option if data_option else cfg.task.data
    where = f"--data {data}" if data_option else f"the checkpoint's task.data {data}"
    try:
        folder = open_data_folder(data, where, tokenizer=tokenizer)
        folder.require_dictionary(where)
    except DataError as e:
        fix = "check the path" if data_option else "pass the folder prepare_data.py wrote as --data"
        raise ExportError(f"{e}; {fix}") from None
    return folder


def check_dictionary(dictionary, manifest: dict | None, tokenizer_size: int, tokenizer_path: Path) -> int:
    """dict.txt must be prepare_data's layout for this tokenizer (the ids in order, then padding):
    also what docs/data.md's fairseq-preprocess recipe writes; returns its size."""
    symbols = dictionary.symbols
    rows = [s for s in symbols[ID_OFFSET:] if not s.startswith("madeupword")]
    size = (manifest or {}).get("id_mapping", {}).get("dictionary_size")
    if rows != [str(i) for i in range(tokenizer_size)] or (size is not None and len(symbols) != size):
        raise ExportError(
            f"dict.txt and {tokenizer_path} disagree: the dictionary has {len(rows)} tokenizer rows "
            f"({len(symbols)} entries, manifest says {size}) but the tokenizer has {tokenizer_size} ids "
            f"0..{tokenizer_size - 1} in order; use the data folder this checkpoint was trained on (a "
            f"frequency-ordered dict.txt, such as fairseq's own GPT-2 one, cannot be exported)")
    return len(symbols)


def check_architecture(arch: str) -> None:
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    if arch not in ARCH_MODEL_REGISTRY and arch not in MODEL_REGISTRY:
        raise ExportError(f"unknown architecture `{arch}`: registered neither by fairseq nor by fairseq_headless")


def build_fairseq_model(state, arch: str):
    from fairseq import tasks

    cfg = state["cfg"]
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    try:
        model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    except RuntimeError as e:
        raise ExportError(f"the checkpoint's weights do not fit the `{arch}` model its config describes "
                          f"({str(e).splitlines()[0]}...)") from None
    return task, model.float().eval()


# --------------------------------------------------------------------------
# tokenizer: the data folder's tokenizer, ids shifted to fairseq's
# --------------------------------------------------------------------------

def read_spm_proto(buf: bytes) -> SimpleNamespace:
    """The fields of sentencepiece's ModelProto that spm_to_tokenizers reads, without protobuf (not a
    dependency): pieces (1), trainer_spec (2), normalizer_spec (3)."""
    trainer = SimpleNamespace(model_type=1, byte_fallback=False, unk_id=0, unk_piece="<unk>",
                              treat_whitespace_as_suffix=False)
    normalizer = SimpleNamespace(precompiled_charsmap=b"", add_dummy_prefix=True,
                                 remove_extra_whitespaces=True, escape_whitespaces=True)
    pieces = []
    for field, wire, value in _iter_proto_fields(buf):
        if field == 1 and wire == 2:  # SentencePiece: piece (1), score (2, float), type (3)
            piece = SimpleNamespace(piece="", score=0.0, type=1)
            for f, _, v in _iter_proto_fields(value):
                if f == 1:
                    piece.piece = v.decode("utf-8")
                elif f == 2:
                    piece.score = struct.unpack("<f", v)[0]
                elif f == 3:
                    piece.type = v
            pieces.append(piece)
        elif field == 2 and wire == 2:
            names = {3: "model_type", 24: "treat_whitespace_as_suffix", 35: "byte_fallback", 40: "unk_id",
                     45: "unk_piece"}
            for f, _, v in _iter_proto_fields(value):
                if f in names:
                    setattr(trainer, names[f], v.decode("utf-8") if f == 45 else bool(v) if f in (24, 35) else v)
        elif field == 3 and wire == 2:
            names = {2: "precompiled_charsmap", 3: "add_dummy_prefix", 4: "remove_extra_whitespaces",
                     5: "escape_whitespaces"}
            for f, _, v in _iter_proto_fields(value):
                if f in names:
                    setattr(normalizer, names[f], bytes(v) if f == 2 else bool(v))
    return SimpleNamespace(pieces=pieces, trainer_spec=trainer, normalizer_spec=normalizer)


def spm_to_tokenizers(proto: SimpleNamespace, path: Path = Path("the sentencepiece model")):
    """A `tokenizers` object that encodes like sentencepiece, from the fields read by read_spm_proto.

    Built here rather than with transformers' SpmConverter: that helper is internal and changed within
    transformers 5.x (5.17 builds a BPE without merges, i.e. every character a byte-fallback piece).
    SentencePiece's order: the precompiled normalization map, removal of extra spaces, the dummy prefix
    "▁" (always, even before an existing "▁"), spaces escaped as "▁". User-defined pieces are emitted
    whole (isolated after normalization); BPE merges a pair when the merged piece is a normal piece,
    best score first.

    Known differences, both caught by the export's tokenizer check when its sample holds such text:
    sentencepiece never produces control or byte pieces from text, while here a unigram model with
    byte fallback turns a literal "<0x41>" into that byte piece, and a BPE model with user-defined
    pieces does so when such a string is all the text between a user-defined piece and the next one
    (or an end of the text).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    NORMAL, USER_DEFINED = 1, 4  # sentencepiece's ModelProto.SentencePiece.Type
    trainer, spec = proto.trainer_spec, proto.normalizer_spec
    if trainer.treat_whitespace_as_suffix:
        raise ExportError(f"{path}: trained with treat_whitespace_as_suffix (\"▁\" ends pieces instead of starting "
                          "them), which the exported fast tokenizer cannot reproduce; retrain without it")
    charsmap = normalizers.Precompiled(spec.precompiled_charsmap) if spec.precompiled_charsmap else None
    user_defined = [p.piece for p in proto.pieces if p.type == USER_DEFINED]
    changed = [piece for piece in user_defined if charsmap and charsmap.normalize_str(piece) != piece]
    if changed:  # sentencepiece matches them before normalizing; the fast tokenizer isolates them after
        raise ExportError(f"{path}: user-defined pieces {changed[:5]} are changed by the model's normalization "
                          "map, so the exported tokenizer would not find them; retrain with pieces the map "
                          "leaves alone or with --normalization_rule_name identity")
    if trainer.model_type == 2:  # BPE: rank each normal piece's splits into two normal pieces by its score
        normal = {p.piece: (-p.score, i) for i, p in enumerate(proto.pieces) if p.type == NORMAL}
        ranked = sorted((rank, piece[:k], piece[k:]) for piece, rank in normal.items()
                        for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
        model = models.BPE(vocab={p.piece: i for i, p in enumerate(proto.pieces)},
                           merges=[(left, right) for _, left, right in ranked], unk_token=trainer.unk_piece,
                           fuse_unk=True, byte_fallback=trainer.byte_fallback,
                           ignore_merges=bool(user_defined))  # a user-defined chunk is emitted as it is
    else:  # unigram: pieces and their log-probabilities
        model = models.Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=trainer.unk_id,
                               byte_fallback=trainer.byte_fallback)
    tokenizer = Tokenizer(model)
    steps = [charsmap] if charsmap else []
    if spec.remove_extra_whitespaces:  # spaces only: sentencepiece leaves newlines and tabs alone
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(" "))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "\u2581"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    if user_defined:  # never split, never merged with a neighbour
        pattern = "|".join(re.escape(piece) for piece in sorted(user_defined, key=len, reverse=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    steps = [decoders.Replace("\u2581", " ")] + ([decoders.ByteFallback()] if trainer.byte_fallback else [])
    steps.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def raw_tokenizer(folder: DataFolder):
    """(the preprocessing path's tokenizer, the same tokenizer as a `tokenizers` object)."""
    from tokenizers import Tokenizer

    reference = folder.load_tokenizer()
    path = reference.path
    if isinstance(reference, SentencePieceTokenizer):
        proto = read_spm_proto(path.read_bytes())
        if proto.trainer_spec.model_type not in (1, 2):
            raise ExportError(f"{path}: sentencepiece model type {reference.model_type} has no "
                              f"fast-tokenizer equivalent (bpe and unigram do)")
        return reference, spm_to_tokenizers(proto, path)
    if isinstance(reference, GPT2BPETokenizer):
        return reference, reference.to_tokenizers()
    return reference, Tokenizer.from_file(str(path))


def shift_to_fairseq_ids(raw, size: int, encoder: bool, add_bos: bool):
    """The raw tokenizer with fairseq's ids: <s> <pad> </s> <unk>, tokenizer id + 4, madeupwords,
    <mask> (encoders). Returns (tokenizers.Tokenizer, name of the unknown-text token)."""
    from tokenizers import Tokenizer, processors

    tj = json.loads(raw.to_str())
    model = tj["model"]
    reserved = set(SPECIALS) | {MASK}

    def rename(s):
        return RENAMED_PREFIX + s if s in reserved else s

    if model["type"] == "Unigram":
        model["vocab"] = [[s, 0.0] for s in SPECIALS] + [[rename(p), score] for p, score in model["vocab"]]
        if model.get("unk_id") is not None:
            model["unk_id"] += ID_OFFSET
        unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else "<unk>"
    elif model["type"] in ("BPE", "WordPiece", "WordLevel"):
        vocab = {s: i for i, s in enumerate(SPECIALS)}
        vocab.update({rename(p): i + ID_OFFSET for p, i in model["vocab"].items()})
        model["vocab"] = vocab
        if model["type"] == "BPE":
            model["merges"] = [[rename(a), rename(b)] for a, b in
                               (m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"])]
        unk = rename(model["unk_token"]) if model.get("unk_token") else "<unk>"
        if model.get("unk_token"):
            model["unk_token"] = unk
    else:
        raise ExportError(f"tokenizer model type {model['type']} is not supported (BPE, Unigram, WordPiece, WordLevel)")
    model_size = len(model["vocab"])

    def added(i, content, **kw):
        return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True, **kw}

    tokens = [added(i, s) for i, s in enumerate(SPECIALS)]
    tokens += [dict(t, id=t["id"] + ID_OFFSET, content=rename(t["content"])) for t in tj.get("added_tokens", [])]
    top = max([model_size - 1] + [t["id"] for t in tokens])
    # dict.txt's padding rows: special tokens, so no text ever maps to them and decoding skips them.
    tokens += [added(i, f"madeupword{j:04d}") for j, i in enumerate(range(top + 1, size))]
    if encoder:  # lstrip like RoBERTa's: "a <mask>" masks the word "▁b" with its leading space
        tokens.append(added(size, MASK, lstrip=True))
    tj["added_tokens"] = sorted(tokens, key=lambda t: t["id"])
    # The preprocessing path encodes without special tokens: keep only offset handling.
    post = tj.get("post_processor") or {}
    kept = [p for p in (post.get("processors", []) if post.get("type") == "Sequence" else [post])
            if p.get("type") == "ByteLevel"]
    tj["post_processor"] = kept[0] if kept else None
    tj["truncation"] = tj["padding"] = None
    tokenizer = Tokenizer.from_str(json.dumps(tj))
    # tokenizers numbers added tokens past the model vocabulary in order; check every id landed.
    names = {t["id"]: t["content"] for t in tj["added_tokens"]}
    for i in range(size + encoder):
        if i in names and tokenizer.token_to_id(names[i]) != i:
            raise ExportError(f"the tokenizer's ids are not contiguous (token {names[i]!r} lands on "
                              f"{tokenizer.token_to_id(names[i])}, not {i}); it cannot be exported")
    if encoder:  # what masked_lm fed the model: <s> line </s> (RoBERTa's pair layout for two segments)
        template = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                 special_tokens=[("<s>", 0), ("</s>", 2)])
    elif add_bos:
        template = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)])
    else:
        template = None  # language_modeling without add_bos_token: the text as it is
    if template is not None:
        tokenizer.post_processor = (processors.Sequence([tokenizer.post_processor, template])
                                    if tokenizer.post_processor else template)
    return tokenizer, unk


def sample_lines(data: Path, dictionary, reference, limit: int) -> list[str]:
    """Text to compare tokenizers on: decoded lines of the binarized validation split, and SAMPLE_TEXT."""
    from fairseq.data import data_utils

    lines = list(SAMPLE_TEXT)
    dataset = data_utils.load_indexed_dataset(str(data / "valid"), dictionary)
    decode = reference.decode
    for k in range(len(dataset) if dataset is not None else 0):
        ids = [i - ID_OFFSET for i in dataset[k].tolist()[:-1]]  # drop the </s> binarization appended
        if ids:
            lines.append(decode(ids))
        if len(lines) >= limit:
            break
    return lines


def check_tokenizer(hf, reference, lines: list[str], encoder: bool, add_bos: bool) -> tuple[int, int]:
    """HF ids == preprocessing-path ids + 4 (+ the specials the fairseq task adds).
    Lines containing a special token's text are skipped: HF tokenizers read them as specials."""
    specials = {t.content for t in hf.added_tokens_decoder.values() if t.special}
    lines_ok = [line for line in lines if not any(s in line for s in specials)]
    expected = [[i + ID_OFFSET for i in ids] for ids in reference.encode_batch(lines_ok)]
    if encoder:
        expected = [[0] + ids + [2] for ids in expected]
    elif add_bos:
        expected = [[0] + ids for ids in expected]
    got = hf(lines_ok)["input_ids"]
    for line, want, have in zip(lines_ok, expected, got):
        if want != have:
            raise ParityError(f"tokenizer mismatch on {line[:60]!r}: fairseq ids {want[:12]}..., "
                              f"exported tokenizer {have[:12]}...")
    return len(lines_ok), len(lines) - len(lines_ok)


# --------------------------------------------------------------------------
# parity check
# --------------------------------------------------------------------------

def parity(fairseq_model, hf_model, export: Export, rows: int) -> dict:
    """Max abs differences on random ids: a full-length row and a right-padded one (pad positions
    are left out: fairseq zeroes them, HF does not, and no real token attends to them)."""
    import torch

    length = min(export.max_length, PARITY_MAX_LENGTH)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, rows, (PARITY_BATCH, length), generator=generator)
    ids[ids == 1] = 3  # no pad inside the text
    ids[1, length // 2:] = 1
    real = ids.ne(1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's deprecation note on fairseq's masks
        fs_hidden = fairseq_model(ids, features_only=True)[0]
        fs_logits = fairseq_model(ids)[0]  # the vanilla head, or e^T for headless models
        hf_hidden = hf_model.base_model(input_ids=ids, attention_mask=real.long()).last_hidden_state
        if export.hf_class == "RobertaModel":  # the card's recipe for headless encoders
            hf_logits = hf_hidden @ hf_model.get_input_embeddings().weight.t()
        else:
            hf_logits = hf_model(input_ids=ids, attention_mask=real.long()).logits
    return {"hidden": float((fs_hidden - hf_hidden)[real].abs().max()),
            "logits": float((fs_logits - hf_logits)[real].abs().max())}


# --------------------------------------------------------------------------
# the conversion
# --------------------------------------------------------------------------

def model_card(info: dict) -> str:
    usage = {
        "RobertaModel": "from transformers import AutoModel, AutoTokenizer\n"
                        "tok = AutoTokenizer.from_pretrained(PATH); model = AutoModel.from_pretrained(PATH)\n"
                        "hidden = model(**tok(\"Some text.\", return_tensors=\"pt\")).last_hidden_state\n"
                        "scores = hidden @ model.get_input_embeddings().weight.T  # e^T: the headless vocabulary scores",
        "RobertaForMaskedLM": "from transformers import pipeline\n"
                              "pipeline(\"fill-mask\", model=PATH)(\"The <mask> of the Union.\")",
    }
    usage["GPT2LMHeadModel"] = usage["GPTNeoXForCausalLM"] = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(PATH); model = AutoModelForCausalLM.from_pretrained(PATH)\n"
        "model.generate(**tok(\"The\", return_tensors=\"pt\"), max_new_tokens=20)")
    usage = usage[info["hf_class"]]
    m = info["manifest"]
    return f"""---
library_name: transformers
tags: [fairseq-headless, {info["tag"]}]
---
# {info["arch"]} ({info["objective"]})

Exported from a fairseq-headless checkpoint by `scripts/convert_to_hf.py` (see docs/export.md).
Headless language models: Godey, de la Clergerie, Sagot, *Headless Language Models: Learning without
Predicting with Contrastive Weight Tying*, ICLR 2024.

| | |
| --- | --- |
| source checkpoint | `{info["checkpoint"]}` ({info["updates"]} updates) |
| fairseq architecture | `{info["arch"]}` (task `{info["task"]}`, criterion `{info["criterion"]}`) |
| training objective | {info["objective"]} |
| Hugging Face class | `{info["hf_class"]}` |
| head | {info["head"]} |
| data manifest | {f'`{info["manifest_path"]}` (sha256 `{info["manifest_sha256"][:16]}...`, created {m.get("created")})' if m else f'none (`{info["data"]}`, binarized by fairseq-preprocess)'} |
| tokenizer | {info["tokenizer_type"]} {", ".join(f"`{t}`" for t in info["tokenizer_files"])}, {info["tokenizer_size"]} ids; exported ids = fairseq ids (tokenizer id + 4) |
| parity with fairseq (fp32, random ids) | max abs diff hidden {info["parity"]["hidden"]:.2e}, logits {info["parity"]["logits"]:.2e} (bound {TOLERANCE:g}) |
| tokenizer check | {info["tokenizer_lines"]} lines identical to the preprocessing path |

```python
PATH = "{info["output"]}"
{usage}
```

Text containing a special token's string (`<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>`, `madeupwordNNNN`) is
read as that special token, as usual for Hugging Face tokenizers; the fairseq preprocessing read it as text.
{"Encoders get `<s> ... </s>` around a text, as fairseq's masked_lm task fed them; the RoBERTa pooler is not part of the export (fairseq has none)." if info["encoder"] else "Decoders get `<s>` before a text (the checkpoint's task had add_bos_token); `</s>` ends every line of the training data." if info["add_bos"] else "Decoders get no special tokens around a text (fairseq's language_modeling task without add_bos_token); `</s>` ends every line of the training data and is the end-of-text and start token for generation."}
"""


def convert(checkpoint: Path, output: Path, data: Path | None = None, force: bool = False,
            tokenizer: tuple = ()) -> dict:
    """Export `checkpoint` to `output`; returns a summary with the parity numbers."""
    output = Path(output)
    if (output.exists() or output.is_symlink()) and not force:
        raise ExportError(f"--output {output} already exists; pass --force to replace it or choose another folder")
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} exists and is not a folder; remove it first")
    if data is not None and not all(p.is_dir() for p in map(Path, str(data).split(":"))):
        raise ExportError(f"--data {data}: not a folder")
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    import torch
    import transformers

    import fairseq_headless.plugin  # noqa: F401  (registers the headless architectures)

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # stderr is for the one error line
    log(f"loading {checkpoint} (weights_only)")
    state = load_checkpoint(Path(checkpoint), data)
    cfg = state["cfg"]
    arch = cfg.model._name
    check_architecture(arch)
    folder = read_data_folder(cfg, data, tuple(tokenizer))
    data, manifest, tokenizer_path = folder.path, folder.manifest, folder.tokenizer[0]
    reference, raw = raw_tokenizer(folder)
    from fairseq.data import Dictionary

    dictionary = Dictionary.load(str(data / "dict.txt"))
    size = check_dictionary(dictionary, manifest, reference.vocab_size, tokenizer_path)
    task, model = build_fairseq_model(state, arch)
    family = family_of(model, arch)
    export = family.export(model, task, arch)
    rows = export.config.vocab_size
    if rows != size + export.encoder:
        raise ExportError(f"the checkpoint has {rows} embedding rows but {data}/dict.txt gives {size}"
                          f"{' + <mask>' if export.encoder else ''}; use the data folder it was trained on")

    log(f"mapping {family.name} weights to {export.hf_class}")
    state_dict = model.state_dict()
    for key, original in export.tied.items():
        if not torch.equal(state_dict[key], state_dict[original]):
            raise ExportError(f"{key} was expected to be tied to {original} but differs")
    left = [k for k in state_dict if k not in export.used and k not in export.tied
            and not k.endswith((".version", "._float_tensor"))]
    if left:
        raise ExportError(f"`{arch}` has weights this converter does not know where to put: {', '.join(left[:5])}")
    # No pooler for RobertaModel: fairseq has none to export (sequence classification does not use it).
    extra = {"add_pooling_layer": False} if export.hf_class == "RobertaModel" else {}
    hf_model = getattr(transformers, export.hf_class)(export.config, **extra)
    missing, unexpected = hf_model.load_state_dict(
        {k: v.detach().float().contiguous() for k, v in export.weights.items()}, strict=False)
    if missing or unexpected:
        raise ExportError(f"internal: {export.hf_class} weights unmapped {missing[:5]} / unknown {unexpected[:5]}")

    add_bos = bool(getattr(task.cfg, "add_bos_token", False)) and not export.encoder
    shifted, unk = shift_to_fairseq_ids(raw, size, export.encoder, add_bos)
    specials = dict(eos_token="</s>", pad_token="<pad>", unk_token=unk,
                    bos_token="<s>" if export.encoder or add_bos else "</s>")
    if export.encoder:
        specials.update(cls_token="<s>", sep_token="</s>", mask_token=MASK)
    hf_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=shifted, model_max_length=export.max_length, **specials)

    workdir = output.parent / f"{output.name}.tmp-{os.getpid()}"
    created = [p for p in reversed(output.parents) if not p.exists()]
    try:
        for parent in created:
            parent.mkdir()
        if workdir.exists():  # left over by a killed run with our pid
            shutil.rmtree(workdir)
        workdir.mkdir()
        hf_model.save_pretrained(workdir, safe_serialization=True)
        hf_tokenizer.save_pretrained(workdir)
        config_path = workdir / "tokenizer_config.json"  # loadable by transformers 4.x too
        tokenizer_config = json.loads(config_path.read_text())
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")

        log("checking the saved folder against fairseq (reloaded with the Auto classes)")
        reloaded = getattr(transformers, export.auto_class).from_pretrained(workdir, dtype=torch.float32).eval()
        diffs = parity(model, reloaded, export, rows)
        log(f"max abs diff: hidden {diffs['hidden']:.2e}, logits {diffs['logits']:.2e} (bound {TOLERANCE:g})")
        if max(diffs.values()) > TOLERANCE:
            raise ParityError(f"the exported model differs from fairseq by {max(diffs.values()):.2e} "
                              f"(> {TOLERANCE:g}): hidden {diffs['hidden']:.2e}, logits {diffs['logits']:.2e}")
        loaded_tokenizer = transformers.AutoTokenizer.from_pretrained(workdir)
        lines = sample_lines(data, dictionary, reference, TOKENIZER_CHECK_LINES)
        checked, skipped = check_tokenizer(loaded_tokenizer, reference, lines, export.encoder, add_bos)
        log(f"tokenizer: {checked} lines identical to the preprocessing path"
            + (f" ({skipped} with special-token text skipped)" if skipped else ""))

        criterion = str(cfg.criterion._name) if cfg.get("criterion") else "unknown"
        headless = criterion.startswith("headless_")
        finetuned_from = cfg.get("checkpoint", {}).get("finetune_from_model")
        manifest_path = folder.manifest_path
        info = dict(
            checkpoint=str(checkpoint), arch=arch, task=cfg.task._name, criterion=criterion, headless=headless,
            objective=("headless: Contrastive Weight Tying, no LM head in pretraining" if headless
                       else f"fine-tuning of `{finetuned_from}` with `{criterion}`" if finetuned_from
                       else f"vanilla: `{criterion}` with an LM head"),
            updates=state.get("optimizer_history", [{}])[-1].get("num_updates", "?"),
            hf_class=export.hf_class, head=export.head, encoder=export.encoder, manifest=manifest,
            manifest_path=str(manifest_path), data=str(data),
            manifest_sha256=hashlib.sha256(manifest_path.read_bytes()).hexdigest() if manifest else None,
            tokenizer_type=folder.tokenizer_type, tokenizer_files=[str(t) for t in folder.tokenizer],
            tokenizer_size=reference.vocab_size,
            parity=diffs, tokenizer_lines=checked, output=str(output), family=family.name,
            add_bos=add_bos, tag="headless" if headless else "causal-finetuned" if finetuned_from else "vanilla")
        (workdir / "README.md").write_text(model_card(info), encoding="utf-8")
        publish(workdir, output, force)
        workdir = None
    finally:
        if workdir is not None and workdir.exists():
            shutil.rmtree(workdir, ignore_errors=True)
        if workdir is not None:
            for parent in reversed(created):
                try:
                    parent.rmdir()
                except OSError:
                    pass
    log(f"wrote {output} ({export.hf_class}, {family.name} family)")
    return {k: info[k] for k in ("family", "hf_class", "head", "parity", "tokenizer_lines", "output", "headless")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Export a fairseq-headless checkpoint to a Hugging Face folder and check parity.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="fairseq checkpoint (.pt)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write (must not exist, see --force)")
    parser.add_argument("--data", type=Path, help="the data folder it was trained on, when task.data has moved")
    parser.add_argument("--tokenizer", type=Path, nargs="+", default=(), metavar="FILE",
                        help="for a data folder binarized by fairseq-preprocess (no manifest.json): its "
                             "tokenizer, a sentencepiece .model, a tokenizer.json, or GPT-2's encoder.json "
                             "and vocab.bpe (docs/data.md); dict.txt must list the ids in order")
    parser.add_argument("--force", action="store_true", help="replace --output once the new export is complete")
    args = parser.parse_args(argv)
    try:
        convert(args.checkpoint, args.output, args.data, args.force, tuple(args.tokenizer))
    except (ExportError, DataError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except ParityError as e:
        print(f"error: parity check failed, nothing written: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where each fairseq weight goes in the Hugging Face model: one visible key table per architecture family.

A family's function builds the transformers config, maps the weights through its table and refuses, with
the reasons, options transformers cannot express. Headless models have no LM head (paper §3): the exported
head is the input embedding matrix (decoders: tied ``lm_head``; encoders: :mod:`.modeling_headless_roberta`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..models import shapes
from ..cli import InputError

# fairseq activation name -> transformers ACT2FN name. gelu_accurate is the tanh approximation,
# transformers' gelu_new; fairseq's plain gelu is the exact erf GELU, transformers' gelu.
ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new", "relu": "relu",
               "tanh": "tanh", "linear": "linear"}


# -- weights: one key table per family --
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


# -- families: what each fairseq model becomes --

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
        raise InputError(f"{what} uses activation `{fairseq_name}`, which has no transformers equivalent "
                          f"(supported: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[fairseq_name]


def _refuse(arch: str, hf_class: str, problems: list[str]) -> None:
    if problems:
        raise InputError(f"architecture `{arch}` cannot be expressed as {hf_class}: " + "; ".join(problems))


def hf_class_of(name: str):
    """A transformers class by name, or one of the headless encoder's own (modeling_headless_roberta.py)."""
    import transformers
    from . import modeling_headless_roberta
    own = {cls.__name__: cls for cls in modeling_headless_roberta.AUTO_MAP.values()}
    return own[name] if name in own else getattr(transformers, name)


def roberta_export(model, task, arch: str) -> Export:
    from fairseq.modules import LearnedPositionalEmbedding
    from transformers import RobertaConfig
    from .modeling_headless_roberta import HeadlessRobertaConfig
    body, cfg = model.encoder.sentence_encoder, model.encoder.sentence_encoder.cfg
    head = getattr(model.encoder, "lm_head", None)
    vanilla = head is not None
    hf_class = "RobertaForMaskedLM" if vanilla else "HeadlessRobertaForMaskedLM"
    _refuse(arch, hf_class, [reason for bad, reason in [
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
    # Headless: a model type of its own, whose masked-LM class scores with e^T (vanilla: plain `roberta`).
    config = (RobertaConfig if vanilla else HeadlessRobertaConfig)(
        vocab_size=rows, hidden_size=dim, num_hidden_layers=len(body.layers),
        num_attention_heads=cfg.encoder.attention_heads, intermediate_size=cfg.encoder.ffn_embed_dim,
        hidden_act=_activation(cfg.activation_fn, arch), hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=body.embed_positions.weight.shape[0],
        type_vocab_size=1, layer_norm_eps=body.layernorm_embedding.eps,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, tie_word_embeddings=True)
    weights, used = map_weights(ROBERTA_TABLE, state, len(body.layers), "roberta.")
    # fairseq has no segment embeddings: a zero row adds nothing, as in fairseq.
    weights["roberta.embeddings.token_type_embeddings.weight"] = state[
        "encoder.sentence_encoder.embed_tokens.weight"].new_zeros(1, dim)
    tied = {}
    if vanilla:
        head_weights, head_used = map_weights(ROBERTA_LM_HEAD_TABLE, state, 0)
        weights.update(head_weights)
        used |= head_used
        config.tie_word_embeddings = head.weight is body.embed_tokens.weight
    return Export(config, hf_class, "AutoModelForMaskedLM", weights, used, tied,
                  head=("trained masked-LM head (dense + gelu + LayerNorm + "
                        + ("decoder tied to the input embeddings)" if config.tie_word_embeddings else "untied decoder)"))
                  if vanilla else "none (headless): vocabulary scores are hidden @ word_embeddings^T (e^T), "
                                  "ids that stand for no text excluded",
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


# The families and their fairseq model classes come from the one shape table (models/shapes.py).
_EXPORTS = {"roberta": roberta_export, "gpt2": gpt2_export, "gpt_neox": gpt_neox_export}
FAMILIES = [Family(f.name, f.fairseq_model, _EXPORTS[f.name]) for f in shapes.FAMILIES.values()]


def family_of(model, arch: str) -> Family:
    import importlib
    for family in FAMILIES:
        module, cls = family.fairseq_model.split(":")
        if isinstance(model, getattr(importlib.import_module(module), cls)):
            return family
    raise InputError(f"architecture `{arch}` ({type(model).__name__}) has no Hugging Face export; supported "
                      f"families: " + ", ".join(f"{f.name} ({f.fairseq_model.split(':')[1]})" for f in FAMILIES))

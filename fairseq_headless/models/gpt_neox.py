"""GPT-NeoX decoders: the paper's Pythia-70M, headless and vanilla (§3.3, §4.2, App. D.2, Tabs.3-4).

fairseq's ``transformer_lm`` has neither rotary embeddings nor the parallel residual, so the decoder is
written here, nanoGPT style, as a ``FairseqIncrementalDecoder``. Headless twins hold no head (logits = e^T);
parameter names and the fused QKV layout are GPT-NeoX's, so the export is a rename. docs/decoders.md."""

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fairseq.dataclass import FairseqDataclass
from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel
from torch import Tensor, nn

from ..sparse_embedding import maybe_enable_sparse_embedding_update
from . import shapes
from .causal_finetune import FREEZE_BODY_HELP, fill_missing_head_from_embeddings, freeze_all_but

logger = logging.getLogger(__name__)

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


# The dataclass needs defaults for the shape's fields: Pythia-70M's; each registered config sets its own.
_PYTHIA_70M = shapes.SHAPES["pythia_70m"]


@dataclass
class GPTNeoXConfig(FairseqDataclass):
    """A GPT-NeoX decoder, Pythia's settings; every field can be overridden."""

    decoder_layers: int = field(default=_PYTHIA_70M.layers, metadata={"help": "number of GPT-NeoX layers"})
    decoder_embed_dim: int = field(default=_PYTHIA_70M.dim, metadata={"help": "hidden size"})
    decoder_ffn_embed_dim: int = field(default=_PYTHIA_70M.ffn, metadata={"help": "MLP inner size"})
    decoder_attention_heads: int = field(default=_PYTHIA_70M.heads, metadata={"help": "attention heads"})
    max_target_positions: int = field(default=2048, metadata={"help": "longest sequence accepted (Pythia's context)"})
    rotary_pct: float = field(default=0.25, metadata={"help": "share of each head's dimensions that rotary rotates"})
    rotary_base: float = field(default=10000.0, metadata={"help": "rotary frequency base (theta)"})
    use_parallel_residual: bool = field(default=True, metadata={
        "help": "x + attn(ln1(x)) + mlp(ln2(x)) (GPT-NeoX / Pythia); false: sequential, as GPT-2"})
    layer_norm_eps: float = field(default=1e-5, metadata={"help": "LayerNorm epsilon"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the embeddings and residual branches"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention probabilities"})
    xformers: bool = field(default=True, metadata={
        "help": "use xformers' memory-efficient attention when installed and on a GPU (else torch's SDPA)"})
    freeze_body: bool = field(default=False, metadata={"help": FREEZE_BODY_HELP})


def rotary_cos_sin(positions: Tensor, rotary_dim: int, base: float, dtype: torch.dtype):
    """cos and sin of position x frequency, (..., rotary_dim), each angle repeated for both halves."""
    compute_dtype = torch.promote_types(dtype, torch.float32)  # angles of fp16 models in fp32, as GPT-NeoX
    inv_freq = base ** (-torch.arange(0, rotary_dim, 2, device=positions.device, dtype=compute_dtype) / rotary_dim)
    angles = positions.to(compute_dtype)[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first cos.size(-1) dimensions of x, pairing dimension i with i + rotary_dim / 2."""
    rotary_dim = cos.size(-1)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    first, second = x_rot.chunk(2, dim=-1)
    rotated_half = torch.cat([-second, first], dim=-1)
    return torch.cat([x_rot * cos + rotated_half * sin, x_pass], dim=-1)


_xformers_ops = None


def _xformers():
    """xformers.ops, or None where it is not installed (imported on first GPU use only)."""
    global _xformers_ops
    if _xformers_ops is None:
        try:
            import xformers.ops as ops
        except Exception:  # not installed, or built for another torch
            ops = False
        _xformers_ops = ops
    return _xformers_ops or None


def attention(q, k, v, mask: Optional[Tensor], causal: bool, dropout_p: float, use_xformers: bool):
    """softmax(q k^T / sqrt(d) + mask) v for (batch, heads, length, head_dim) tensors."""
    ops = _xformers() if use_xformers and q.is_cuda and mask is None else None
    if ops is not None:
        bias = ops.LowerTriangularMask() if causal else None
        # xformers' layout is (batch, length, heads, head_dim)
        out = ops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias,
                                             p=dropout_p)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)


@with_incremental_state
class GPTNeoXAttention(nn.Module):
    def __init__(self, cfg: GPTNeoXConfig):
        super().__init__()
        dim, self.num_heads = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        if dim % self.num_heads:
            raise ValueError(f"decoder_embed_dim {dim} is not a multiple of decoder_attention_heads {self.num_heads}")
        self.head_dim = dim // self.num_heads
        self.rotary_dim = int(self.head_dim * cfg.rotary_pct)  # GPT-NeoX rounds down the same way
        self.rotary_base = cfg.rotary_base
        self.dropout_p = cfg.attention_dropout
        self.use_xformers = cfg.xformers
        self.query_key_value = nn.Linear(dim, 3 * dim)
        self.dense = nn.Linear(dim, dim)

    def forward(self, x, positions, mask, causal, incremental_state: Optional[IncrementalState] = None):
        batch, length, dim = x.shape
        qkv = self.query_key_value(x).view(batch, length, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).chunk(3, dim=-1)  # each (batch, heads, length, head_dim)
        cos, sin = rotary_cos_sin(positions[:, None], self.rotary_dim, self.rotary_base, x.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "cache")
            if cache is not None:
                k = torch.cat([cache["key"], k], dim=2)
                v = torch.cat([cache["value"], v], dim=2)
            self.set_incremental_state(incremental_state, "cache", {"key": k, "value": v})
        dropout_p = self.dropout_p if self.training else 0.0
        out = attention(q, k, v, mask, causal, dropout_p, self.use_xformers)
        return self.dense(out.transpose(1, 2).reshape(batch, length, dim))

    def cached_length(self, incremental_state: Optional[IncrementalState]) -> int:
        cache = self.get_incremental_state(incremental_state, "cache")
        return 0 if cache is None else cache["key"].size(2)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        # Beam search reorders (and duplicates) the hypotheses between steps.
        cache = self.get_incremental_state(incremental_state, "cache")
        if cache is not None:
            cache = {name: t.index_select(0, new_order) for name, t in cache.items()}
            self.set_incremental_state(incremental_state, "cache", cache)
        return incremental_state


class GPTNeoXMLP(nn.Module):
    def __init__(self, cfg: GPTNeoXConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim)
        self.dense_4h_to_h = nn.Linear(cfg.decoder_ffn_embed_dim, cfg.decoder_embed_dim)

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))  # exact (erf) GELU, as Pythia


class GPTNeoXLayer(nn.Module):
    def __init__(self, cfg: GPTNeoXConfig):
        super().__init__()
        dim = cfg.decoder_embed_dim
        self.input_layernorm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attention = GPTNeoXAttention(cfg)
        self.mlp = GPTNeoXMLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.use_parallel_residual = cfg.use_parallel_residual

    def forward(self, x, positions, mask, causal, incremental_state=None):
        attn = self.dropout(self.attention(self.input_layernorm(x), positions, mask, causal, incremental_state))
        if self.use_parallel_residual:
            return x + attn + self.dropout(self.mlp(self.post_attention_layernorm(x)))
        x = x + attn
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x)))


class GPTNeoXDecoder(FairseqIncrementalDecoder):
    def __init__(self, cfg: GPTNeoXConfig, dictionary, headless: bool):
        super().__init__(dictionary)
        dim = cfg.decoder_embed_dim
        self.padding_idx = dictionary.pad()
        self.max_target_positions = cfg.max_target_positions
        self.embed_in = nn.Embedding(len(dictionary), dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([GPTNeoXLayer(cfg) for _ in range(cfg.decoder_layers)])
        self.final_layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        # Pythia's head is untied; a headless decoder has none (logits = e^T, no parameter).
        self.embed_out = None if headless else nn.Linear(dim, len(dictionary), bias=False)
        self.reset_parameters(cfg)

    def reset_parameters(self, cfg: GPTNeoXConfig):
        # Pythia's init (GPT-NeoX `small_init` and `wang_init`): N(0, sqrt(2 / 5d)) everywhere, and
        # N(0, 2 / (layers sqrt(d))) for the two projections that write into the residual stream.
        small = math.sqrt(2 / (5 * cfg.decoder_embed_dim))
        wang = 2 / cfg.decoder_layers / math.sqrt(cfg.decoder_embed_dim)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "layernorm" in name or "layer_norm" in name:
                nn.init.ones_(p)
            else:
                std = wang if name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")) else small
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state: Optional[IncrementalState] = None,
                features_only: bool = False, **unused):
        x, extra = self.extract_features(prev_output_tokens, incremental_state=incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(self, prev_output_tokens, encoder_out=None, incremental_state=None, **unused):
        tokens = prev_output_tokens
        padding = tokens.eq(self.padding_idx)
        # Positions count real tokens only (left-padded prompts start at 0), as fairseq's make_positions.
        positions = (torch.cumsum(~padding, dim=1) - 1).clamp(min=0)
        # fairseq passes every token so far when decoding incrementally: run only those not cached.
        past = self.layers[0].attention.cached_length(incremental_state) if incremental_state is not None else 0
        new_tokens, positions = tokens[:, past:], positions[:, past:]
        mask, causal = self.attention_mask(padding, past, new_tokens.size(1))

        x = self.dropout(self.embed_in(new_tokens))
        inner_states = [x.transpose(0, 1)]
        for layer in self.layers:
            x = layer(x, positions, mask, causal, incremental_state)
            inner_states.append(x.transpose(0, 1))  # T x B x C, as fairseq's decoders
        x = self.final_layer_norm(x)
        return x, {"attn": [None], "inner_states": inner_states}

    @staticmethod
    def attention_mask(padding: Tensor, past: int, length: int):
        """(boolean mask or None, is_causal) for `length` new queries after `past` cached keys."""
        total = past + length
        if not padding.any():
            if past == 0:
                return None, True  # the fast path of training: plain causal attention
            if length == 1:
                return None, False  # one new token sees everything cached
        query_pos = torch.arange(past, total, device=padding.device)
        key_pos = torch.arange(total, device=padding.device)
        allowed = key_pos[None, :] <= query_pos[:, None]  # (length, total)
        # Padding keys are hidden; a padding query still sees itself, so that no row is empty.
        allowed = (allowed & ~padding[:, None, :]) | (key_pos[None, :] == query_pos[:, None])
        return allowed[:, None], False  # (batch, 1, length, total)

    def output_layer(self, features, **unused):
        if self.embed_out is None:
            return F.linear(features, self.embed_in.weight)
        return self.embed_out(features)

    def max_positions(self):
        return self.max_target_positions


class GPTNeoXLanguageModel(FairseqLanguageModel):
    headless = False

    @classmethod
    def build_model(cls, cfg: GPTNeoXConfig, task):
        decoder = GPTNeoXDecoder(cfg, task.target_dictionary, headless=cls.headless)
        if cfg.freeze_body:
            if cls.headless:
                raise ValueError("model.freeze_body=true on a headless model leaves nothing to train")
            freeze_all_but(decoder, decoder.embed_out)
        # Only the headless configs have the field: a vanilla head spreads the gradient over every row.
        return maybe_enable_sparse_embedding_update(cls(decoder), cfg)

    def input_embeddings(self):
        return self.decoder.embed_in

    def upgrade_state_dict_named(self, state_dict, name):
        super().upgrade_state_dict_named(state_dict, name)
        if not self.headless:
            prefix = f"{name}." if name else ""
            fill_missing_head_from_embeddings(state_dict, f"{prefix}decoder.embed_out.weight",
                                              f"{prefix}decoder.embed_in.weight")


class HeadlessGPTNeoXLanguageModel(GPTNeoXLanguageModel):
    headless = True


for _shape in shapes.of_family("gpt_neox"):
    _defaults = {"decoder_layers": _shape.layers, "decoder_embed_dim": _shape.dim,
                 "decoder_attention_heads": _shape.heads, "decoder_ffn_embed_dim": _shape.ffn}
    shapes.register_dataclass_twins(_shape, GPTNeoXConfig, _defaults, GPTNeoXLanguageModel,
                                    HeadlessGPTNeoXLanguageModel)

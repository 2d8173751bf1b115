"""Headless decoders: fairseq's ``transformer_lm`` with no output projection (paper §3.3, §4.2, App. D.5).

``build_output_projection`` builds nothing; asked for logits, the model scores with the input embeddings,
e^T (Tab.3's "Headless" row). The ``gpt2`` shapes are config dataclasses registered as models of their own
name, since hydra ignores an architecture function's defaults for them (docs/design.md#models)."""

from dataclasses import dataclass, field

import torch.nn.functional as F
from fairseq.models import register_model
from fairseq.models.transformer import TransformerDecoder
from fairseq.models.transformer_lm import (DEFAULT_MAX_TARGET_POSITIONS, TransformerLanguageModel,
                                           TransformerLanguageModelConfig)
from fairseq.utils import safe_getattr

from ..sparse_embedding import SparseEmbeddingUpdateConfig, maybe_enable_sparse_embedding_update
from . import shapes
from .causal_finetune import FREEZE_BODY_HELP, UntiedTransformerLanguageModel


class HeadlessTransformerDecoder(TransformerDecoder):
    def build_output_projection(self, args, dictionary, embed_tokens):
        self.output_projection = None

    def output_layer(self, features):
        return F.linear(features, self.embed_tokens.weight)

    def upgrade_state_dict_named(self, state_dict, name):
        # The parent re-creates a tied `output_projection.weight` entry, a parameter a headless decoder lacks.
        state_dict = super().upgrade_state_dict_named(state_dict, name)
        state_dict.pop(f"{name}.output_projection.weight", None)
        return state_dict


@dataclass
class HeadlessTransformerLanguageModelConfig(TransformerLanguageModelConfig, SparseEmbeddingUpdateConfig):
    pass


@register_model("headless_transformer_lm", dataclass=HeadlessTransformerLanguageModelConfig)
class HeadlessTransformerLanguageModel(TransformerLanguageModel):
    @classmethod
    def build_model(cls, args, task):
        # The targets are rows of a plain embedding table, which adaptive and character inputs lack; BASE
        # layers are built by the output-projection builder replaced here.
        for option in ("character_embeddings", "adaptive_input", "adaptive_softmax_cutoff", "base_layers"):
            if safe_getattr(args, option, None):
                raise ValueError(f"headless decoders do not support --{option.replace('_', '-')}")
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        embed_tokens = cls.build_embedding(args, task.source_dictionary, args.decoder_input_dim)
        decoder = HeadlessTransformerDecoder(args, task.target_dictionary, embed_tokens, no_encoder_attn=True)
        return maybe_enable_sparse_embedding_update(cls(decoder), args)

    def input_embeddings(self):
        return self.decoder.embed_tokens


@dataclass
class Gpt2Config(TransformerLanguageModelConfig):
    """GPT-2's settings, which every ``gpt2`` shape shares (the shape's own fields are set per entry)."""

    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_fn: str = "gelu_accurate"  # GPT-2's tanh approximation
    decoder_learned_pos: bool = True
    no_scale_embedding: bool = True
    decoder_normalize_before: bool = True
    share_decoder_input_output_embed: bool = True


for _shape in shapes.of_family("gpt2"):
    _config = shapes.register_dataclass_twins(_shape, Gpt2Config, {
        "decoder_layers": _shape.layers, "decoder_embed_dim": _shape.dim, "decoder_input_dim": _shape.dim,
        "decoder_output_dim": _shape.dim, "decoder_attention_heads": _shape.heads, "decoder_ffn_embed_dim": _shape.ffn,
    }, TransformerLanguageModel, HeadlessTransformerLanguageModel)
    # An LM head of its own, filled from the embeddings when loading a headless checkpoint.
    shapes.register_dataclass_model(
        _shape.untied, UntiedTransformerLanguageModel,
        shapes.config_with_defaults(_shape.untied, (_config,), {"share_decoder_input_output_embed": False},
                                    [("freeze_body", bool, field(default=False, metadata={"help": FREEZE_BODY_HELP}))]),
    )

"""Headless decoders: fairseq's ``transformer_lm`` with no output projection (paper §3.3, §4.2).

The decoder is fairseq's ``TransformerDecoder`` with ``build_output_projection``
overridden to build nothing; training uses the ``headless_language_modeling``
criterion on the final hidden states. Asked for logits (``fairseq-eval-lm``,
generation), it scores with the input embeddings, e^T: the zero-cost
"Headless" row of the paper's Tab.3. ``--sparse-embedding-update``
(``model.sparse_embedding_update=true``) trains the input embeddings row-sparsely:
see :mod:`fairseq_headless.sparse_embedding`.
"""

from dataclasses import dataclass

import torch.nn.functional as F
from fairseq.models import register_model
from fairseq.models.transformer import TransformerDecoder
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS,
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
)
from fairseq.utils import safe_getattr

from ..sparse_embedding import SparseEmbeddingUpdateConfig, maybe_enable_sparse_embedding_update
from .gpt2_shapes import Gpt2QuarterConfig, Gpt2TinyConfig


class HeadlessTransformerDecoder(TransformerDecoder):
    def build_output_projection(self, args, dictionary, embed_tokens):
        self.output_projection = None

    def output_layer(self, features):
        return F.linear(features, self.embed_tokens.weight)

    def upgrade_state_dict_named(self, state_dict, name):
        # The parent re-creates a tied `output_projection.weight` entry from the
        # embeddings when loading; a headless decoder has no such parameter.
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
        # The targets are rows of a plain embedding table: the parent's adaptive and
        # character inputs have none, and BASE layers are built by the parent's
        # output-projection builder, which is replaced here.
        for option in ("character_embeddings", "adaptive_input", "adaptive_softmax_cutoff", "base_layers"):
            if safe_getattr(args, option, None):
                raise ValueError(f"headless decoders do not support --{option.replace('_', '-')}")
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(
                args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS
            )
        embed_tokens = cls.build_embedding(args, task.source_dictionary, args.decoder_input_dim)
        decoder = HeadlessTransformerDecoder(
            args, task.target_dictionary, embed_tokens, no_encoder_attn=True
        )
        return maybe_enable_sparse_embedding_update(cls(decoder), args)

    def input_embeddings(self):
        return self.decoder.embed_tokens


# The headless twins of gpt2_shapes: same dataclass defaults, a model without head.
@dataclass
class HeadlessGpt2QuarterConfig(Gpt2QuarterConfig, SparseEmbeddingUpdateConfig):
    pass


@dataclass
class HeadlessGpt2TinyConfig(Gpt2TinyConfig, SparseEmbeddingUpdateConfig):
    pass


@register_model("headless_gpt2_quarter", dataclass=HeadlessGpt2QuarterConfig)
class HeadlessGpt2QuarterLanguageModel(HeadlessTransformerLanguageModel):
    pass


@register_model("headless_gpt2_tiny", dataclass=HeadlessGpt2TinyConfig)
class HeadlessGpt2TinyLanguageModel(HeadlessTransformerLanguageModel):
    pass

"""Headless RoBERTa/BERT encoders: fairseq's RoBERTa with no LM head (paper §3.2, §4.1, §5).

``RobertaEncoder`` with the LM-head builder overridden to build nothing; asked for logits, it scores with
the input embeddings, e^T. Each ``roberta`` entry of :mod:`.shapes` is registered on ``headless_roberta``
and on fairseq's ``roberta``."""

from contextlib import nullcontext

import torch.nn.functional as F
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel, base_architecture
from fairseq.utils import safe_getattr, safe_hasattr
from omegaconf import OmegaConf, open_dict

from ..sparse_embedding import HELP as SPARSE_EMBEDDING_UPDATE_HELP, maybe_enable_sparse_embedding_update
from . import shapes


class HeadlessRobertaEncoder(RobertaEncoder):
    def build_lm_head(self, embed_dim, output_dim, activation_fn, weight):
        return None

    def output_layer(self, features, masked_tokens=None, **unused):
        if masked_tokens is not None:
            features = features[masked_tokens, :]
        return F.linear(features, self.sentence_encoder.embed_tokens.weight)


@register_model("headless_roberta")
class HeadlessRobertaModel(RobertaModel):
    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        parser.add_argument("--sparse-embedding-update", action="store_true", help=SPARSE_EMBEDDING_UPDATE_HELP)

    @classmethod
    def build_model(cls, args, task):
        # As RobertaModel.build_model, with the headless encoder.
        with open_dict(args) if OmegaConf.is_config(args) else nullcontext():
            base_architecture(args)
            if not safe_hasattr(args, "max_positions"):
                args.max_positions = safe_getattr(args, "tokens_per_sample", task.max_positions())
            encoder = HeadlessRobertaEncoder(args, task.source_dictionary)
        return maybe_enable_sparse_embedding_update(cls(args, encoder), args)

    def input_embeddings(self):
        return self.encoder.sentence_encoder.embed_tokens


register_model_architecture("headless_roberta", "headless_roberta")(base_architecture)


def encoder_shape(shape: shapes.Shape):
    """The architecture function of one shape table entry."""

    def architecture(args):
        fields = {"encoder_layers": shape.layers, "encoder_embed_dim": shape.dim,
                  "encoder_attention_heads": shape.heads, "encoder_ffn_embed_dim": shape.ffn, **shape.defaults}
        for key, value in fields.items():
            setattr(args, key, safe_getattr(args, key, value))  # the command line or the YAML wins
        base_architecture(args)

    architecture.__name__ = f"{shape.name}_architecture"
    architecture.__doc__ = shape.paper
    return architecture


for _shape in shapes.of_family("roberta"):
    _architecture = encoder_shape(_shape)
    register_model_architecture("headless_roberta", _shape.headless)(_architecture)
    if not _shape.vanilla_is_fairseqs:
        register_model_architecture("roberta", _shape.name)(_architecture)

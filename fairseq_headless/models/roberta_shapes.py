"""Encoder sizes of the paper (App. D) as fairseq architectures, and their vanilla twins.

Each shape is a function of defaults that the headless architecture and its
vanilla twin share, so a headless run and its baseline differ only in the
criterion and architecture names. The vanilla twins are registered on fairseq's
own ``roberta`` model (with its LM head tied to the input embeddings);
``roberta_base`` is fairseq's and is the twin of ``headless_roberta_base``.
"""

from fairseq.models import register_model_architecture
from fairseq.models.roberta.model import base_architecture
from fairseq.utils import safe_getattr


def _encoder_shape(args, layers, dim, heads, ffn):
    # safe_getattr: anything given on the command line or in the YAML wins.
    args.encoder_layers = safe_getattr(args, "encoder_layers", layers)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", dim)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", heads)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", ffn)
    base_architecture(args)


def roberta_small_shape(args):
    """BERT-small (google/bert_uncased_L-4_H-512_A-8), D.4: the vocabulary sweep and ablations."""
    _encoder_shape(args, layers=4, dim=512, heads=8, ffn=2048)


def roberta_multilingual_shape(args):
    """distilbert-base-multilingual-cased's body, D.3: 6 layers of BERT-base width."""
    _encoder_shape(args, layers=6, dim=768, heads=12, ffn=3072)


def roberta_tiny_shape(args):
    """CPU-sized, for the demo and the tests (not in the paper)."""
    args.dropout = safe_getattr(args, "dropout", 0.0)
    args.attention_dropout = safe_getattr(args, "attention_dropout", 0.0)
    _encoder_shape(args, layers=2, dim=128, heads=2, ffn=512)


register_model_architecture("roberta", "roberta_small")(roberta_small_shape)
register_model_architecture("roberta", "roberta_multilingual")(roberta_multilingual_shape)
register_model_architecture("roberta", "roberta_tiny")(roberta_tiny_shape)

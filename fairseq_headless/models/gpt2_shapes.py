"""GPT-2 style decoder sizes of the paper (App. D.5) and their vanilla twins.

GPT-2's settings on fairseq's ``transformer_lm``: tanh-approximated GELU
(fairseq's ``gelu_accurate``), learned positions, no embedding scale, pre-LayerNorm
blocks with a final LayerNorm, and, for the vanilla twin, a head tied to the input
embeddings.

``transformer_lm`` is a dataclass-configured model: under ``fairseq-hydra-train``
its dataclass defaults are merged in before any architecture function runs, so an
architecture function of ``safe_getattr`` defaults would silently be ignored
(512-dim, ReLU). Each shape is therefore a config dataclass whose *defaults* are the
shape, registered as a model of its own name: ``model._name=gpt2_quarter`` (hydra)
and ``--arch gpt2_quarter`` (argparse) both give the shape, and every field can
still be overridden (``+model.decoder_layers=4`` in hydra, as the YAMLs list only the name;
``--decoder-layers 4`` with fairseq-train).
"""

from dataclasses import dataclass

from fairseq.models import register_model
from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig


@dataclass
class Gpt2QuarterConfig(TransformerLanguageModelConfig):
    """GPT-2 small with hidden size, heads and layers divided by 4 (D.5, Fig.7)."""

    decoder_layers: int = 3
    decoder_embed_dim: int = 192
    decoder_input_dim: int = 192
    decoder_output_dim: int = 192
    decoder_attention_heads: int = 3
    decoder_ffn_embed_dim: int = 768
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_fn: str = "gelu_accurate"  # GPT-2's tanh approximation
    decoder_learned_pos: bool = True
    no_scale_embedding: bool = True
    decoder_normalize_before: bool = True
    share_decoder_input_output_embed: bool = True


@dataclass
class Gpt2TinyConfig(Gpt2QuarterConfig):
    """CPU-sized, for the demo and the tests (not in the paper)."""

    decoder_layers: int = 2
    decoder_embed_dim: int = 128
    decoder_input_dim: int = 128
    decoder_output_dim: int = 128
    decoder_attention_heads: int = 2
    decoder_ffn_embed_dim: int = 512
    dropout: float = 0.0
    attention_dropout: float = 0.0


@register_model("gpt2_quarter", dataclass=Gpt2QuarterConfig)
class Gpt2QuarterLanguageModel(TransformerLanguageModel):
    pass


@register_model("gpt2_tiny", dataclass=Gpt2TinyConfig)
class Gpt2TinyLanguageModel(TransformerLanguageModel):
    pass

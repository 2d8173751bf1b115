"""The ablation objectives of the paper's Tab.6 (§6), as options of the CWT criterions.

* ``cross_entropy=true``, "Cross-Entropy + CWT": the vanilla model's LM-head cross-entropy added at the
  CWT positions, on the same features (one body pass).
* ``targets=separate``, "NCE (wo/ WT)" after Ma & Collins (2018): CWT against a separate static matrix,
  a parameter of the criterion (optimized, checkpointed and DDP-wrapped by fairseq's ``Trainer``)."""

import torch.nn as nn
from fairseq import modules
from fairseq.modules.transformer_sentence_encoder import init_bert_params

TARGET_MODES = ("tied", "separate")


def lm_head(model):
    """The callable mapping K x D features to K x V logits of a vanilla model, or None for a headless one
    (whose logits, e^T, have no parameter of their own to train with cross-entropy)."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None and getattr(encoder, "lm_head", None) is not None:
        return encoder.lm_head  # fairseq's RoBERTa: dense, GELU, LayerNorm, tied matrix + bias
    decoder = getattr(model, "decoder", None)
    if decoder is not None and getattr(decoder, "adaptive_softmax", None) is None and (
        getattr(decoder, "output_projection", None) is not None  # fairseq's transformer_lm
        or getattr(decoder, "embed_out", None) is not None  # GPT-NeoX / Pythia
    ):
        return decoder.output_layer
    return None


def require_lm_head(model):
    head = lm_head(model)
    if head is None:
        raise ValueError(f"criterion.cross_entropy=true (--cross-entropy) needs a model with an LM head, but "
                         f"{type(model).__name__} has none (headless): train a vanilla architecture (e.g. "
                         f"roberta_small, configs/mlm_small_cwt_ce.yaml, Tab.6 'Cross-Entropy + CWT') or drop "
                         f"cross_entropy")
    return head


def cross_entropy_sum(head, features, target_ids):
    """Summed full-vocabulary cross-entropy of ``head(features)``; log-softmax in fp32 as fairseq's."""
    logits = head(features)
    return modules.cross_entropy(logits.view(-1, logits.size(-1)), target_ids.view(-1), reduction="sum")


def separate_target_matrix(vocab_size: int, dim: int, padding_idx: int) -> nn.Embedding:
    """The V x D static target matrix of NCE (wo/ WT), initialised as RoBERTa's input embeddings
    (``init_bert_params``: N(0, 0.02), padding row zero), since Tab.6 is a BERT-small ablation; also for a decoder."""
    matrix = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
    init_bert_params(matrix)
    return matrix


def check_target_dim(matrix: nn.Embedding, features_dim: int) -> None:
    if matrix.embedding_dim != features_dim:
        raise ValueError(f"criterion.target_dim={matrix.embedding_dim} does not match the model's hidden size "
                         f"{features_dim}: set criterion.target_dim={features_dim} (--target-dim {features_dim})")

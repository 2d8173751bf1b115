"""The ablation objectives of the paper's Tab.6 (§6 "Ablation study"), as options of the CWT criterions.

* ``cross_entropy=true`` — "Cross-Entropy + CWT": the vanilla full-vocabulary
  cross-entropy of the model's own LM head is added to the CWT loss at the same
  positions, "without specific weights" (Tab.6 caption). The head is applied to the
  features the CWT loss already has at those positions, so the body runs once, as
  fairseq's ``masked_lm`` criterion applies RoBERTa's head to ``masked_tokens`` only.
  Needs a model with an LM head: a vanilla architecture (``roberta_small``).
* ``targets=separate`` — "NCE (wo/ WT)", after Ma & Collins (2018): the CWT loss
  against an additional static embedding matrix instead of the model's input
  embeddings (no weight tying). The matrix is a parameter of the criterion:
  fairseq's ``Trainer`` optimizes ``criterion.parameters()`` with the model's, saves
  them under ``checkpoint["criterion"]`` and reloads them strictly on resume (and
  wraps a criterion with parameters in DDP). The model, its checkpoint entry and
  its exports stay those of the plain headless model: the matrix is, as in the
  paper, parameters "added during training" only.
"""

import torch.nn as nn
from fairseq import modules
from fairseq.modules.transformer_sentence_encoder import init_bert_params

TARGET_MODES = ("tied", "separate")


def lm_head(model):
    """The callable mapping K x D features to K x V logits of a vanilla model, or None for a headless one.

    Headless models answer logit requests with e^T (no parameter of their own): that is
    not an LM head to train with cross-entropy, so they have none here.
    """
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
        raise ValueError(
            f"criterion.cross_entropy=true (--cross-entropy) needs a model with an LM head, but "
            f"{type(model).__name__} has none (headless): train a vanilla architecture (e.g. roberta_small, "
            f"configs/mlm_small_cwt_ce.yaml, Tab.6 'Cross-Entropy + CWT') or drop cross_entropy"
        )
    return head


def cross_entropy_sum(head, features, target_ids):
    """Summed full-vocabulary cross-entropy of ``head(features)``; log-softmax in fp32 as fairseq's."""
    logits = head(features)
    return modules.cross_entropy(logits.view(-1, logits.size(-1)), target_ids.view(-1), reduction="sum")


def separate_target_matrix(vocab_size: int, dim: int, padding_idx: int) -> nn.Embedding:
    """The V x D static target matrix of NCE (wo/ WT), initialised as RoBERTa's input embeddings.

    fairseq's RoBERTa initialises its embeddings with ``init_bert_params``: N(0, 0.02),
    padding row zero. Tab.6 is a BERT-small ablation, so that is the init used (also for
    a decoder, whose own embeddings fairseq draws with std D^-0.5 instead).
    """
    matrix = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
    init_bert_params(matrix)
    return matrix


def check_target_dim(matrix: nn.Embedding, features_dim: int) -> None:
    if matrix.embedding_dim != features_dim:
        raise ValueError(
            f"criterion.target_dim={matrix.embedding_dim} does not match the model's hidden size "
            f"{features_dim}: set criterion.target_dim={features_dim} (--target-dim {features_dim})"
        )

"""What the two headless criterions share: config, target lookup, the CWT call, logging (paper §3).

A criterion takes the model's final hidden states at K selected positions as o and its own input
embeddings of the true tokens as targets, calls :func:`fairseq_headless.cwt.cwt_loss`, and follows
fairseq's criterion contract (summed loss, ``sample_size`` = positions). A dummy batch (:data:`DUMMY_BATCH`)
selects no position but joins every collective (docs/design.md#fairseq_patchespy)."""

import math
from dataclasses import dataclass, field
from functools import partial

import torch
from fairseq.criterions import FairseqCriterion
from fairseq.distributed import utils as distributed_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics

from ..all_gather import all_gather_with_grad
from ..cwt import NEGATIVE_MODES, cwt_loss
from ..sparse_embedding import empty_next_sparse_gradient
from .ablation_objectives import (TARGET_MODES, check_target_dim, cross_entropy_sum, require_lm_head,
                                  separate_target_matrix)

# Key of a dummy batch's sample, set by fairseq_patches.prepare_sample_marking_dummies.
DUMMY_BATCH = "headless_dummy_batch"


@dataclass
class CWTCriterionConfig(FairseqDataclass):
    temperature: float = field(default=1.0, metadata={"help": "t in exp(o.e / t); the paper uses 1"})
    negatives: ChoiceEnum(NEGATIVE_MODES) = field(default="batch", metadata={"help": (
        "denominator of the contrastive softmax: 'batch' = every selected target of the micro-batch, repeats "
        "included (the paper); 'unique' = each distinct target token once (no false negatives, K x U cost)")})
    negatives_scope: ChoiceEnum(["local", "global"]) = field(default="local", metadata={"help": (
        "'local' = negatives from this device's micro-batch (the paper); 'global' = all-gather the targets of "
        "every data-parallel rank (beyond the paper: W times more negatives)")})
    chunk_size: int = field(default=0, metadata={"help": (
        "if > 0, compute the K x K logits this many rows at a time (O(chunk x K) memory); 0 = in one block")})
    cross_entropy: bool = field(default=False, metadata={"help": (
        "also add the full-vocabulary cross-entropy of the model's LM head at the same positions (paper Tab.6 "
        "'Cross-Entropy + CWT'); needs a vanilla model, e.g. roberta_small, and not "
        "distributed_training.find_unused_parameters=true (the head runs outside the DDP forward)")})
    targets: ChoiceEnum(TARGET_MODES) = field(default="tied", metadata={"help": (
        "CWT targets: 'tied' = the model's own input embeddings (the paper's CWT); 'separate' = a trainable "
        "V x D matrix held by the criterion (paper Tab.6 'NCE (wo/ WT)', after Ma & Collins 2018)")})
    target_dim: int = field(default=0, metadata={"help": (
        "D of the separate target matrix (targets=separate only): the model's hidden size, e.g. 512 for "
        "BERT-small")})


def input_embeddings(model):
    """The model's input embedding table (the CWT targets), for ours and fairseq's models."""
    if hasattr(model, "input_embeddings"):
        return model.input_embeddings()
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "sentence_encoder"):
        return encoder.sentence_encoder.embed_tokens  # fairseq's roberta
    decoder = getattr(model, "decoder", None)
    if decoder is not None and hasattr(decoder, "embed_tokens"):
        return decoder.embed_tokens  # fairseq's transformer_lm
    raise TypeError(f"cannot find the input embeddings of {type(model).__name__}")


class CWTCriterion(FairseqCriterion):
    """Base class of the two registered criterions, which differ only in the task they score."""

    def __init__(self, cfg: CWTCriterionConfig, task):
        super().__init__(task)
        self.temperature = cfg.temperature
        self.negatives = str(cfg.negatives)
        self.chunk_size = cfg.chunk_size
        self.negatives_scope = str(cfg.negatives_scope)
        self.cross_entropy = cfg.cross_entropy
        self.target_matrix = None
        if str(cfg.targets) == "separate":
            # fairseq builds the model first but never shows it to the criterion: D comes from the config.
            if cfg.target_dim <= 0:
                raise ValueError("criterion.targets=separate needs criterion.target_dim (--target-dim): the model's "
                                 "hidden size D, e.g. 512 for BERT-small")
            self.target_matrix = separate_target_matrix(len(task.target_dictionary), cfg.target_dim, self.padding_idx)
        elif cfg.target_dim:
            raise ValueError("criterion.target_dim is only for criterion.targets=separate")
        self._dummy_gradient_hook = None

    def gather(self):
        """The all-gather for global negatives, or None (local scope, or a single process)."""
        if self.negatives_scope != "global" or distributed_utils.get_data_parallel_world_size() == 1:
            return None
        return partial(all_gather_with_grad, group=distributed_utils.get_data_parallel_group())

    def selected_targets(self, sample):
        """(K-selection mask over the feature grid, target ids at those positions): the non-padding targets,
        which both of fairseq's tasks fill only where a token is scored, as its own criterions read them."""
        selected = sample["target"].ne(self.padding_idx)
        return selected, sample["target"][selected]

    def targets_of(self, model):
        """The CWT target table: the model's input embeddings, or the separate matrix."""
        return input_embeddings(model) if self.target_matrix is None else self.target_matrix

    def forward(self, model, sample, reduce=True):
        selected, target_ids = self.selected_targets(sample)
        if sample.get(DUMMY_BATCH, False):  # a replayed batch (loss x 0): none of its targets is a negative
            selected, target_ids = torch.zeros_like(selected), target_ids[:0]
        self._empty_sparse_gradient_of_dummy(model, sample.get(DUMMY_BATCH, False))
        head = require_lm_head(model) if self.cross_entropy else None  # fail before the forward pass
        features = model(**sample["net_input"], features_only=True)[0]
        if self.target_matrix is not None:
            check_target_dim(self.target_matrix, features.size(-1))
        outputs = features[selected]
        embedding = self.targets_of(model)
        result = cwt_loss(
            outputs,
            target_ids,
            embedding_matrix=embedding.weight,
            # a table trained row-sparsely (model.sparse_embedding_update) gets a sparse gradient here too
            sparse_gradient=getattr(embedding, "sparse", False),
            negatives=self.negatives,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
            gather=self.gather(),
        )
        loss = result.loss
        logging_output = {}
        if head is not None:
            # One body pass: the head sees only the selected positions' features (fairseq's masked_tokens).
            ce = cross_entropy_sum(head, outputs, target_ids)
            loss = loss + ce
            logging_output.update(cwt_loss=result.loss.data, ce_loss=ce.data)
        logging_output.update(loss=loss.data, ntokens=sample["ntokens"], nsentences=sample["nsentences"],
                              sample_size=result.num_positions, ncorrect=result.correct.data,
                              nnegatives=result.num_negatives, nbatches=1)
        return loss, result.num_positions, logging_output

    def _empty_sparse_gradient_of_dummy(self, model, dummy):
        """A dummy batch's row-sparse input-embedding gradient gets no row: lazy Adam would move its zero rows,
        and only here is the batch known to be a dummy (docs/design.md, the sparse update's section)."""
        if self._dummy_gradient_hook is not None:  # left over if the dummy's backward never ran (OOM)
            self._dummy_gradient_hook.remove()
            self._dummy_gradient_hook = None
        if dummy and torch.is_grad_enabled() and getattr(input_embeddings(model), "sparse", False):
            self._dummy_gradient_hook = empty_next_sparse_gradient(input_embeddings(model).weight)

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        loss, positions, batches = total("loss"), total("sample_size"), total("nbatches")
        # Base 2, as fairseq's own criterions log their losses.
        metrics.log_scalar("loss", loss / max(positions, 1) / math.log(2), positions, round=3)
        for part in ("cwt_loss", "ce_loss"):  # the two terms of Tab.6's 'Cross-Entropy + CWT'
            if any(part in log for log in logging_outputs):
                metrics.log_scalar(part, total(part) / max(positions, 1) / math.log(2), positions, round=3)
        metrics.log_scalar("cwt_acc", 100.0 * total("ncorrect") / max(positions, 1), positions, round=2)
        metrics.log_scalar("positions", positions / max(batches, 1), batches, round=1)
        metrics.log_scalar("negatives", total("nnegatives") / max(batches, 1), batches, round=1)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

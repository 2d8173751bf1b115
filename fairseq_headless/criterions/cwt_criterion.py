"""What the two headless criterions share: config, embedding lookup, the CWT call, logging.

A criterion selects K positions of a batch (masked tokens for MLM, next-token
positions for causal LM), takes the model's final hidden states there as o and
the model's own input embeddings of the true tokens as targets, and applies the
pure CWT loss of :mod:`fairseq_headless.cwt`. It follows fairseq's criterion
contract: summed loss, ``sample_size`` = number of positions, and a logging
output that can be summed across workers.
"""

import math
from dataclasses import dataclass, field
from functools import partial

from fairseq.criterions import FairseqCriterion
from fairseq.distributed import utils as distributed_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics

from ..all_gather import all_gather_with_grad
from ..cwt import NEGATIVE_MODES, cwt_loss


@dataclass
class CWTCriterionConfig(FairseqDataclass):
    temperature: float = field(
        default=1.0,
        metadata={"help": "t in exp(o.e / t); the paper uses 1"},
    )
    negatives: ChoiceEnum(NEGATIVE_MODES) = field(
        default="batch",
        metadata={
            "help": "denominator of the contrastive softmax: 'batch' = every selected target "
            "of the micro-batch, repeats included (the paper); 'unique' = each distinct "
            "target token once (no false negatives from repeated tokens, K x U cost)"
        },
    )
    negatives_scope: ChoiceEnum(["local", "global"]) = field(
        default="local",
        metadata={
            "help": "'local' = negatives from this device's micro-batch (the paper); 'global' = "
            "all-gather the targets of every data-parallel rank (beyond the paper: W times more "
            "negatives, the loss and gradients of one process on the concatenated batch)"
        },
    )
    chunk_size: int = field(
        default=0,
        metadata={
            "help": "if > 0, compute the K x K logits this many rows at a time and recompute "
            "them in backward (O(chunk x K) memory instead of O(K^2)); 0 = in one block"
        },
    )


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
    """Base class: subclasses say which positions are selected and what their targets are."""

    def __init__(self, cfg: CWTCriterionConfig, task):
        super().__init__(task)
        self.temperature = cfg.temperature
        self.negatives = str(cfg.negatives)
        self.chunk_size = cfg.chunk_size
        self.negatives_scope = str(cfg.negatives_scope)

    def gather(self):
        """The all-gather for global negatives, or None (local scope, or a single process)."""
        if self.negatives_scope != "global" or distributed_utils.get_data_parallel_world_size() == 1:
            return None
        return partial(all_gather_with_grad, group=distributed_utils.get_data_parallel_group())

    def selected_targets(self, sample):
        """(K-selection mask over the feature grid, target ids at those positions)."""
        raise NotImplementedError

    def forward(self, model, sample, reduce=True):
        selected, target_ids = self.selected_targets(sample)
        features = model(**sample["net_input"], features_only=True)[0]
        embedding = input_embeddings(model)
        result = cwt_loss(
            features[selected],
            target_ids,
            embedding_matrix=embedding.weight,
            # a table trained row-sparsely (model.sparse_embedding_update) gets a sparse gradient here too
            sparse_gradient=getattr(embedding, "sparse", False),
            negatives=self.negatives,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
            gather=self.gather(),
        )
        logging_output = {
            "loss": result.loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": result.num_positions,
            "ncorrect": result.correct.data,
            "nnegatives": result.num_negatives,
            "nbatches": 1,
        }
        return result.loss, result.num_positions, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        loss, positions, batches = total("loss"), total("sample_size"), total("nbatches")
        # Base 2, as fairseq's own criterions log their losses.
        metrics.log_scalar("loss", loss / max(positions, 1) / math.log(2), positions, round=3)
        metrics.log_scalar("cwt_acc", 100.0 * total("ncorrect") / max(positions, 1), positions, round=2)
        metrics.log_scalar("positions", positions / max(batches, 1), batches, round=1)
        metrics.log_scalar("negatives", total("nnegatives") / max(batches, 1), batches, round=1)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

"""The causal fine-tuning stage of headless decoders (paper §3.3, §4.2, App. E.3, Tab.3 "Headless + FT").

A headless decoder has no LM head. To recover a language model, the vanilla twin is
built, with an LM head that is *not* tied to the input embeddings, the headless
checkpoint is loaded into it, and the missing head is initialised as a copy of the
input embeddings (so that at step 0 the logits are exactly the headless model's
e^T scores); then it is trained with fairseq's ``cross_entropy`` on a small share of
the pretraining data. With fairseq this is one switch on a vanilla config:
``checkpoint.finetune_from_model=HEADLESS.pt`` (fairseq then resets the optimizer,
schedule and data iterator, and loads strictly through ``upgrade_state_dict_named``,
which is where the copy is made).

- GPT-NeoX (``pythia_70m``, ``pythia_tiny``): the vanilla models are untied already;
  they call :func:`fill_missing_head_from_embeddings` (in :mod:`.gpt_neox`).
- GPT-2 style: ``gpt2_quarter`` / ``gpt2_tiny`` tie their head, which would make the
  fine-tuned head the embedding matrix itself; ``gpt2_quarter_untied`` /
  ``gpt2_tiny_untied`` are the same shapes with an untied head filled the same way: an
  :class:`UntiedTransformerLanguageModel`, registered for every ``gpt2`` entry of
  :mod:`.shapes` by :mod:`.headless_transformer_lm`.

``model.freeze_body=true`` trains the head alone (the probe mode of the authors'
released fine-tuning script).
"""

import logging

from fairseq.models.transformer_lm import TransformerLanguageModel

logger = logging.getLogger(__name__)


def fill_missing_head_from_embeddings(state_dict, head_key: str, embedding_key: str) -> bool:
    """Where a checkpoint has input embeddings but no head (a headless one), add the head as a copy.

    A copy, not the same tensor: the head and the embeddings are trained apart from then on.
    Returns whether the head was filled.
    """
    if head_key in state_dict or embedding_key not in state_dict:
        return False
    state_dict[head_key] = state_dict[embedding_key].detach().clone()
    logger.info(f"{head_key} is not in the checkpoint (headless): initialised as a copy of {embedding_key}")
    return True


def freeze_all_but(module, trained):
    """Probe mode: only `trained`'s parameters keep requires_grad (fairseq optimizes only those)."""
    keep = {id(p) for p in trained.parameters()}
    for p in module.parameters():
        p.requires_grad_(id(p) in keep)


FREEZE_BODY_HELP = "probe mode of the causal fine-tuning stage: train the LM head only"


class UntiedTransformerLanguageModel(TransformerLanguageModel):
    @classmethod
    def build_model(cls, args, task):
        if args.share_decoder_input_output_embed:
            raise ValueError(
                f"model.share_decoder_input_output_embed=true: {args._name} fine-tunes an untied head; "
                f"use the tied model ({args._name.removesuffix('_untied')}) instead"
            )
        model = super().build_model(args, task)
        if args.freeze_body:
            freeze_all_but(model, model.decoder.output_projection)
        return model

    def upgrade_state_dict_named(self, state_dict, name):
        super().upgrade_state_dict_named(state_dict, name)
        prefix = f"{name}." if name else ""
        fill_missing_head_from_embeddings(
            state_dict, f"{prefix}decoder.output_projection.weight", f"{prefix}decoder.embed_tokens.weight"
        )


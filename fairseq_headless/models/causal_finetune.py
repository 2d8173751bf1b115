"""The causal fine-tuning stage of headless decoders (paper §3.3, §4.2, App. E.3, Tab.3 "Headless + FT").

The vanilla twin, with an untied head, loads the headless checkpoint (``checkpoint.finetune_from_model``)
and fills the missing head with a copy of the input embeddings, so step 0 scores as e^T. GPT-2 shapes get
``<name>_untied`` twins; ``model.freeze_body=true`` trains the head alone. Configs: docs/decoders.md."""

import logging

from fairseq.models.transformer_lm import TransformerLanguageModel

logger = logging.getLogger(__name__)


def fill_missing_head_from_embeddings(state_dict, head_key: str, embedding_key: str) -> bool:
    """Where a checkpoint has input embeddings but no head (a headless one), add the head as a copy (not the
    same tensor: the two train apart from then on). Returns whether the head was filled."""
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
            raise ValueError(f"model.share_decoder_input_output_embed=true: {args._name} fine-tunes an untied head; "
                             f"use the tied model ({args._name.removesuffix('_untied')}) instead")
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


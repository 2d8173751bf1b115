"""Hugging Face classes of a headless RoBERTa export: the masked-LM scores are e^T (paper §3, Contrastive Weight Tying).

A headless encoder was pretrained without an LM head; asked for vocabulary scores, fairseq-headless scores
the final hidden states against the input embedding matrix E: logits = hidden @ E^T
(``HeadlessRobertaEncoder.output_layer``), no dense layer, no LayerNorm, no bias. transformers'
``RobertaForMaskedLM`` would instead build a randomly initialised ``lm_head`` and answer at random, so a
headless export has a model type of its own, ``headless_roberta``, whose classes are in this file.

scripts/convert_to_hf.py copies this file verbatim into every headless encoder export as
``modeling_headless_roberta.py`` and names its classes in ``config.json``'s ``auto_map``; transformers
runs it from the export folder, offline, when a load passes ``trust_remote_code=True``. That is why it
imports only torch and transformers. docs/export.md says what was chosen and why.

- ``HeadlessRobertaForMaskedLM`` (``AutoModelForMaskedLM``, ``pipeline("fill-mask")``): e^T, with the
  ids that stand for no text (``config.never_predicted``: fairseq's ``<s> <pad> </s> <unk>``, the
  ``madeupword`` padding rows, ``<mask>``, the tokenizer's own unknown/control/special tokens) set to the
  dtype's lowest value, so that they are never predicted.
- ``HeadlessRobertaModel`` (``AutoModel``): the encoder, without the pooler (fairseq has none, so it
  would be random).
- The task classes (sequence classification, multiple choice, token classification, question
  answering) are transformers' RoBERTa ones, heads included, bound to this config: a headless and a
  vanilla export are fine-tuned with exactly the same new head.
"""
import torch
from torch import nn
from transformers import RobertaConfig
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.roberta.modeling_roberta import (
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreTrainedModel,
)


class HeadlessRobertaConfig(RobertaConfig):
    """RoBERTa's config with the ids the e^T scores must never predict."""

    model_type = "headless_roberta"
    never_predicted: list[int] | None = None


class HeadlessRobertaPreTrainedModel(RobertaPreTrainedModel):
    config_class = HeadlessRobertaConfig


class HeadlessRobertaModel(RobertaModel):
    config_class = HeadlessRobertaConfig

    def __init__(self, config, add_pooling_layer=False):
        super().__init__(config, add_pooling_layer=add_pooling_layer)


class HeadlessRobertaForMaskedLM(HeadlessRobertaPreTrainedModel):
    """Vocabulary scores hidden @ E^T; no head parameter at all (nothing can be left randomly initialised)."""

    def __init__(self, config):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.post_init()

    def get_output_embeddings(self):
        return None  # the scores reuse the input embeddings; there is no output layer to tie or resize

    def never_predicted_mask(self, device) -> torch.Tensor:
        mask = torch.zeros(self.config.vocab_size, dtype=torch.bool, device=device)
        mask[list(self.config.never_predicted or [])] = True
        return mask

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs):
        return_dict = kwargs.pop("return_dict", None)
        outputs = self.roberta(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        hidden = outputs.last_hidden_state
        logits = hidden @ self.roberta.get_input_embeddings().weight.t()
        logits = logits.masked_fill(self.never_predicted_mask(logits.device), torch.finfo(logits.dtype).min)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.to(logits.device).view(-1))
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return output.to_tuple() if return_dict is False else output


class HeadlessRobertaForSequenceClassification(RobertaForSequenceClassification):
    config_class = HeadlessRobertaConfig


class HeadlessRobertaForMultipleChoice(RobertaForMultipleChoice):
    config_class = HeadlessRobertaConfig


class HeadlessRobertaForTokenClassification(RobertaForTokenClassification):
    config_class = HeadlessRobertaConfig


class HeadlessRobertaForQuestionAnswering(RobertaForQuestionAnswering):
    config_class = HeadlessRobertaConfig


AUTO_MAP = {  # config.json's auto_map: Auto class -> class of this file
    "AutoConfig": HeadlessRobertaConfig,
    "AutoModel": HeadlessRobertaModel,
    "AutoModelForMaskedLM": HeadlessRobertaForMaskedLM,
    "AutoModelForSequenceClassification": HeadlessRobertaForSequenceClassification,
    "AutoModelForMultipleChoice": HeadlessRobertaForMultipleChoice,
    "AutoModelForTokenClassification": HeadlessRobertaForTokenClassification,
    "AutoModelForQuestionAnswering": HeadlessRobertaForQuestionAnswering,
}

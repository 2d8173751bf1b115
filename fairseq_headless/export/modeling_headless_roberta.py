"""Hugging Face classes of a headless RoBERTa export: the masked-LM scores are e^T (paper §3, Contrastive Weight Tying).

A headless encoder has no LM head, so its export has a model type of its own, ``headless_roberta``
(``RobertaForMaskedLM`` would build a random head): e^T scores that never predict
``config.never_predicted``, no pooler, and RoBERTa's task classes bound to this config. The converter
copies this file into every such export (``trust_remote_code=True``): it imports only torch and
transformers. Choices: docs/export.md."""
import torch
from torch import nn
from transformers import RobertaConfig
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.roberta.modeling_roberta import (RobertaForMultipleChoice, RobertaForQuestionAnswering,
                                                          RobertaForSequenceClassification,
                                                          RobertaForTokenClassification, RobertaModel,
                                                          RobertaPreTrainedModel)


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

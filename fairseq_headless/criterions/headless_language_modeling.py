"""``headless_language_modeling``: CWT over next-token positions of fairseq's ``language_modeling`` task (§3.3).

``sample["target"]`` is the input shifted by one, padded where a sequence ends
early; every non-padding position is selected (:meth:`CWTCriterion.selected_targets`),
as fairseq's ``cross_entropy`` criterion scores them (its ``ignore_index`` = padding).
"""

from fairseq.criterions import register_criterion

from .cwt_criterion import CWTCriterion, CWTCriterionConfig


@register_criterion("headless_language_modeling", dataclass=CWTCriterionConfig)
class HeadlessLanguageModelingLoss(CWTCriterion):
    pass

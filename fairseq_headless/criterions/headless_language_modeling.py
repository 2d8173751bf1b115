"""``headless_language_modeling``: CWT over next-token positions of fairseq's ``language_modeling`` task (§3.3).

Every non-padding position of ``sample["target"]`` (the input shifted by one) is selected, as fairseq's
``cross_entropy`` criterion scores them."""

from fairseq.criterions import register_criterion

from .cwt_criterion import CWTCriterion, CWTCriterionConfig


@register_criterion("headless_language_modeling", dataclass=CWTCriterionConfig)
class HeadlessLanguageModelingLoss(CWTCriterion):
    pass

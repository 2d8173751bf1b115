"""``headless_masked_lm``: CWT over the masked positions of fairseq's ``masked_lm`` task (§3.2, §4.1).

The selected positions are the masked ones (the non-padding targets), exactly those the vanilla
``masked_lm`` criterion scores."""

from fairseq.criterions import register_criterion

from .cwt_criterion import CWTCriterion, CWTCriterionConfig


@register_criterion("headless_masked_lm", dataclass=CWTCriterionConfig)
class HeadlessMaskedLmLoss(CWTCriterion):
    pass

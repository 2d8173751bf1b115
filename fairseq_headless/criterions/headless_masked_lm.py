"""``headless_masked_lm``: CWT over the masked positions of fairseq's ``masked_lm`` task (§3.2, §4.1).

fairseq's masked_lm task puts the original token at each masked position of
``sample["target"]`` and padding everywhere else, so the selected positions are
the non-padding targets (:meth:`CWTCriterion.selected_targets`), exactly those the
vanilla ``masked_lm`` criterion scores.
"""

from fairseq.criterions import register_criterion

from .cwt_criterion import CWTCriterion, CWTCriterionConfig


@register_criterion("headless_masked_lm", dataclass=CWTCriterionConfig)
class HeadlessMaskedLmLoss(CWTCriterion):
    pass

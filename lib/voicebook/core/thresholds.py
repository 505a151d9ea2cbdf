"""The practice thresholds more than one stage applies, defined once.

Text CE is on the scale coqui's trainer logs (already multiplied by ``gpt_loss_text_ce_weight``,
0.01). The training health monitor raises its alarm and the decision matrix disqualifies a
candidate at the same edge: ``text_ce_alarming``.
"""

from __future__ import annotations

TEXT_CE_ALARM = 0.04
"""Text CE at or above this: the model is forgetting how to read text."""


def text_ce_alarming(text_ce: float | None, alarm: float = TEXT_CE_ALARM) -> bool:
    """True when ``text_ce`` is at or above the alarm (None: no number, no alarm)."""
    return text_ce is not None and text_ce >= alarm

"""Everything that touches coqui-tts lives in this package: one seam for that dependency."""

import logging


class _DropUnusedGpt2TokenIdWarnings(logging.Filter):
    """coqui's GPT builds a transformers GPT2Config without bos/eos ids, so GPT-2's 50256 stays in
    it, outside XTTS's small vocabularies, and transformers warns at every model build. XTTS never
    reads those two ids: it marks starts and stops with its own start/stop text and audio tokens.
    Other token-id warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(
            ("Model config: bos_token_id must be", "Model config: eos_token_id must be")
        )


logging.getLogger("transformers.configuration_utils").addFilter(_DropUnusedGpt2TokenIdWarnings())

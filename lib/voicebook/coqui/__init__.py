"""Everything that touches coqui-tts lives in this package: one seam for that dependency."""

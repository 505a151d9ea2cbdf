"""The voice-search stage: a voice (XTTS's conditioning) searched against the frozen model."""

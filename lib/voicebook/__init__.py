"""voicebook: a reproducible notebook workbook for fine-tuning Coqui XTTS v2 on one voice."""

__version__ = "0.1.0"

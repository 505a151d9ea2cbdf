"""voicebook: a reproducible notebook workbook for fine-tuning Coqui XTTS v2 on one voice."""

__version__ = "0.1.0"

import warnings

# webrtcvad (resemblyzer's voice-activity detector) imports pkg_resources only to read its own
# version; the deprecation warning it triggers says nothing a voicebook user can act on.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", module="webrtcvad")

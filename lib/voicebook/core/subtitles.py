"""Subtitle files (SRT / WebVTT) as cues: read by data prep (long recordings into clips) and by the
tiny base (its vocab is trained on the demo corpus's text)."""

from __future__ import annotations

import re

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})"
_CUE_TIMES = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_subtitles(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of every cue in SRT or WebVTT ``text``, in file order.

    Cue numbers, VTT headers / NOTE / STYLE blocks and cue settings are ignored; the lines
    after a ``start --> end`` line, up to a blank line, are the cue's text.
    """
    cues = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = block.strip("\n").split("\n")
        for i, line in enumerate(lines):
            match = _CUE_TIMES.match(line)
            if match:
                g = match.groups()
                start, end = _seconds(*g[:4]), _seconds(*g[4:])
                cues.append((start, end, " ".join(x.strip() for x in lines[i + 1 :])))
                break
    return cues

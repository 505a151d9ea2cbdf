"""One way to read a value given as text, for ``voicebook run -p``, the sweep's ``-p`` axes, the
phases' command line, YAML parameter files and the decision's thresholds: papermill's typing
(int, float, then YAML), then, where a default says which type is wanted, that type.

Hand-made on purpose: papermill types ``-p`` values this way but does not export the function,
and argparse and YAML each type only their own half (a flag's text, a file's values)."""

from __future__ import annotations

from typing import Any

import yaml


def parse_value(text: str) -> Any:
    """Type a text value as papermill's ``-p`` does: int, float, then YAML, else the string
    (``"1e-6"`` → 1e-6, ``"3"`` → 3, ``"[1, 2]"`` → [1, 2], ``"true"`` → True)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def like(default: Any, value: Any, name: str = "value") -> Any:
    """``value`` (text, or already typed by YAML or papermill) in the type of ``default``: a
    bool from true/false/yes/no/1/0, an int from a whole number, a float from any number (so
    ``"1e-6"``, which YAML leaves as text, is 1e-06). Where the default is text or None the value
    is kept as given (None for a text default is the default: not given); other defaults (lists,
    mappings) take the parsed value. A value that does not fit raises ValueError naming ``name``."""
    if isinstance(default, str) or default is None:
        return default if value is None and default is not None else value
    typed = parse_value(value) if isinstance(value, str) else value
    if isinstance(default, bool):
        if typed in (True, False) and not isinstance(typed, float):  # 1 and 0 too, not 1.0
            return bool(typed)
        raise ValueError(f"{name}={value!r} is not true or false: fix its value.")
    if not isinstance(default, int | float):
        return typed
    if isinstance(typed, int | float) and not isinstance(typed, bool):
        if isinstance(default, float):
            return float(typed)
        if isinstance(typed, int) or typed.is_integer():
            return int(typed)
    raise ValueError(f"{name}={value!r} is not a {type(default).__name__}: fix its value.")


def as_structure(value: Any) -> Any:
    """A list or mapping given as text (papermill's ``-p`` passes text) as that list or
    mapping; any other value as it is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        return parse_value(value)
    return value

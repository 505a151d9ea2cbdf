"""One way for every stage to build its config from its notebook's parameters.

Each stage's settings are one dataclass whose field defaults are the parameter defaults (the
notebook's parameters cell mirrors them; ``tests/test_stages.py`` compares the values). A
notebook builds its config with ``from_params(Config, globals())``: every field the notebook
defines is taken, the rest keep their defaults. Names a notebook declares besides the config's
fields are only where results go (``LOCATION_PARAMS``).

A value spelt otherwise than its default's type takes that type (``normalise``): ``lr: 1e-6`` in a
YAML file is the string "1e-6" (YAML wants a dot), papermill's ``-p lr 1e-6`` the float 1e-06,
and a run that reuses another's work compares meanings, not spellings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from voicebook.core.values import like

T = TypeVar("T")
# Parameters of a notebook that say where the stage reads and writes, not how it works.
LOCATION_PARAMS = ("experiment", "outputs_dir", "base_model")


def from_params(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` filled with the entries of ``values`` (a notebook's ``globals()``) that name one
    of its fields."""
    names = [f.name for f in dataclasses.fields(cls)]
    return normalise(cls(**{n: values[n] for n in names if n in values}))


def normalise(config: T) -> T:
    """``config`` with each field whose value is spelt in another type than its default's
    converted (module doc, ``voicebook.core.values.like``); text defaults keep the value given."""
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING:
            continue
        value = getattr(config, f.name)
        typed = like(f.default, value, f.name)
        if typed is not value:
            object.__setattr__(config, f.name, typed)
    return config


def defaults(cls: type) -> dict[str, Any]:
    """Every field's default value (factories called)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out

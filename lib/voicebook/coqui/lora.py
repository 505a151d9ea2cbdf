"""LoRA on XTTS's GPT through peft: low-rank adapters on the GPT-2 blocks, the base frozen.

XTTS's GPT (``xtts.gpt``) holds a transformers ``GPT2Model`` (``xtts.gpt.gpt``) whose blocks'
projections are ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc`` and ``mlp.c_proj``.
``add_adapters`` freezes the whole GPT and lets peft inject LoRA layers into the projections a
``LoraSpec`` names; with ``train_heads`` the text and mel embeddings and heads train as well.

A LoRA checkpoint holds, under ``"model"``, only what trains (adapters, heads when they train)
and, under ``"lora"``, the spec plus the full-weights file the adapters sit on and its sha256
(``weights``, ``weights_digest``): the base's ``model.pth`` or a full phase's checkpoint. A
phase that continues a LoRA checkpoint keeps its adapters and its weights. Everything that
loads a checkpoint (``coqui.models.load_xtts``, ``coqui.config.gpt_trainer_model``, the export)
calls ``apply_checkpoint``, which merges the adapters into those weights (peft's
``merge_and_unload``): a LoRA checkpoint is a candidate like any other, and the export's
``model.pth`` is a standard XTTS model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from voicebook.core.fileio import base_file_digest

LORA_KEY = "lora"  # the checkpoint entry that makes a checkpoint a LoRA one
HEADS = ("text_embedding", "mel_embedding", "text_head", "mel_head")  # train_heads trains these
_TUNER = "_voicebook_lora_tuner"  # where a GPT keeps its peft tuner (not a registered module)
_FLAGS = "_voicebook_lora_requires_grad"  # and its weights' requires_grad before the adapters


@dataclass(frozen=True)
class LoraSpec:
    """What LoRA trains. The phases' parameters (``training.params``) hold the defaults."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]
    train_heads: bool

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora_rank={self.rank}: the adapters' rank must be at least 1.")
        if self.alpha <= 0:
            raise ValueError(f"lora_alpha={self.alpha}: must be positive (scale = alpha / rank).")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora_dropout={self.dropout}: must be in [0, 1).")
        if not self.targets:
            raise ValueError("lora_targets is empty: name at least one of c_attn, c_proj, c_fc.")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoraSpec:
        return cls(**{**values, "targets": tuple(values["targets"])})


def add_adapters(gpt: torch.nn.Module, spec: LoraSpec) -> None:
    """Freeze XTTS's GPT ``gpt`` and inject ``spec``'s adapters into its GPT-2 blocks (freshly
    initialised: B = 0, so the model's outputs are unchanged until it trains)."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    gpt.__dict__[_FLAGS] = {n: p.requires_grad for n, p in gpt.named_parameters()}
    gpt.requires_grad_(False)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.targets),
        fan_in_fan_out=True,  # GPT-2's projections are transformers Conv1D: weight (in, out)
    )
    try:
        tuner = LoraModel(gpt.gpt, config, "default")
    except ValueError as exc:  # peft: no module matched the targets
        raise ValueError(
            f"lora_targets={list(spec.targets)} match no layer of XTTS's GPT-2 blocks ({exc}); "
            "use c_attn, c_proj and/or c_fc."
        ) from exc
    gpt.__dict__[_TUNER] = tuner  # kept beside the modules, so it is in no state dict
    for name in HEADS if spec.train_heads else ():
        getattr(gpt, name).requires_grad_(True)


def merge_adapters(gpt: torch.nn.Module) -> None:
    """Fold the adapters into the GPT-2 weights and remove them (peft's merge_and_unload): the
    GPT is a plain XTTS GPT again, with the same outputs and its weights as trainable as
    before the adapters came (a full phase may go on training it)."""
    tuner = gpt.__dict__.pop(_TUNER, None)
    if tuner is not None:
        gpt.gpt = tuner.merge_and_unload()
        flags = gpt.__dict__.pop(_FLAGS)
        for name, p in gpt.named_parameters():
            p.requires_grad_(flags[name])


def trained_names(module: torch.nn.Module, gpt: str) -> set[str]:
    """Names (in ``module``) of the GPT's weights that train; ``gpt`` is the GPT's path in
    ``module`` ("gpt" in an ``Xtts``, "xtts.gpt" in a GPTTrainer)."""
    return {
        f"{gpt}.{name}"
        for name, p in module.get_submodule(gpt).named_parameters()
        if p.requires_grad
    }


def trainable_state(module: torch.nn.Module, gpt: str) -> dict[str, torch.Tensor]:
    """The entries of ``module``'s state dict that train (adapters, and heads when they train)."""
    names = trained_names(module, gpt)
    return {k: v for k, v in torch.nn.Module.state_dict(module).items() if k in names}


def load_trained(
    module: torch.nn.Module, gpt: str, state: dict[str, torch.Tensor], source: Any
) -> None:
    """Load a LoRA checkpoint's entries into ``module`` (which has the same adapters): every
    entry must fit and every trained tensor must be there, else a clear error naming
    ``source``."""
    trained = trained_names(module, gpt)
    missing = sorted(trained - set(state))
    unexpected = sorted(set(state) - set(module.state_dict()))
    if missing or unexpected:
        raise ValueError(
            f"LoRA checkpoint {source} does not fit these adapters (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): its lora_rank, lora_targets and lora_train_heads "
            "must be the ones the phase uses (see its 'lora' entry)."
        )
    # torch's own loader: a trainer model's load_state_dict is the one calling this
    torch.nn.Module.load_state_dict(module, state, strict=False)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def lora_info(checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    """The ``"lora"`` entry of a checkpoint (spec, weights, digest); None for a full one."""
    if not checkpoint or not Path(checkpoint).is_file():
        return None
    return read_checkpoint(checkpoint).get(LORA_KEY)


def new_info(spec: LoraSpec, weights: str | os.PathLike) -> dict[str, Any]:
    """The ``"lora"`` entry of adapters trained on the full weights in ``weights``."""
    path = Path(weights).resolve()
    return {"spec": spec.to_dict(), "weights": str(path), "weights_digest": base_file_digest(path)}


def checked_weights(info: dict[str, Any], checkpoint: Any) -> Path:
    """The full-weights file a LoRA checkpoint sits on, after checking it is the same file."""
    path = Path(info["weights"])
    if not path.is_file():
        raise FileNotFoundError(
            f"LoRA checkpoint {checkpoint} sits on {path}, which is missing: restore that file "
            f"(sha256 {info['weights_digest']}), or export the checkpoint where it is present."
        )
    if base_file_digest(path) != info["weights_digest"]:
        raise ValueError(
            f"LoRA checkpoint {checkpoint} sits on {path} with sha256 {info['weights_digest']}, "
            "but that file has changed since: its adapters fit only the original weights. "
            "Restore them, or retrain the LoRA phase on the new ones."
        )
    return path


def apply_checkpoint(
    xtts: torch.nn.Module, checkpoint: str | os.PathLike, *, merge: bool = True
) -> dict[str, Any]:
    """Add a LoRA checkpoint's adapters (and heads) to ``xtts`` (a coqui ``Xtts`` holding the
    checkpoint's full weights) and, with ``merge``, fold them in; returns its ``"lora"`` entry."""
    saved = read_checkpoint(checkpoint)
    info = saved[LORA_KEY]
    add_adapters(xtts.gpt, LoraSpec.from_dict(info["spec"]))
    state = {k.removeprefix("xtts."): v for k, v in saved["model"].items()}
    load_trained(xtts, "gpt", state, checkpoint)
    if merge:
        merge_adapters(xtts.gpt)
    return info

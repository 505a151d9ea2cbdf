"""The trainer model of a LoRA phase: ``CachedGPTTrainer`` whose state is its adapters.

``LoraGPTTrainer`` holds the full weights it was built from (frozen) and the adapters of
``coqui.lora`` (trained). coqui's Trainer saves and restores ``model.state_dict()``: here that is
only what trains, so periodic checkpoints hold the adapters and their optimizer state, the
slim best model the adapters alone, and resuming after a kill restores exactly them.
``checkpoint_info()`` is the ``"lora"`` entry every checkpoint of the phase carries (the spec,
the full-weights file and its sha256). The optimizer sees only the trained weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from voicebook.coqui.cached import CachedGPTTrainer
from voicebook.coqui.lora import (
    LORA_KEY,
    LoraSpec,
    add_adapters,
    load_trained,
    new_info,
    read_checkpoint,
    trainable_state,
)

GPT = "xtts.gpt"  # the GPT's path in a GPTTrainer


class LoraGPTTrainer(CachedGPTTrainer):
    """GPTTrainer (cached codes) training LoRA adapters on frozen weights (see module doc)."""

    def __init__(self, config: Any, spec: LoraSpec, info: dict[str, Any] | None = None):
        """``config.model_args.xtts_checkpoint`` names the full weights; ``info`` is the
        ``"lora"`` entry of a LoRA checkpoint whose adapters this one continues (same weights)."""
        super().__init__(config)
        add_adapters(self.xtts.gpt, spec)
        self.lora_spec = spec
        self.lora_info = {**(info or new_info(spec, config.model_args.xtts_checkpoint))}
        self.lora_info["spec"] = spec.to_dict()

    def continue_adapters(self, checkpoint: str | Path) -> None:
        """Start from the adapters (and heads) of a LoRA checkpoint with the same spec."""
        saved = read_checkpoint(checkpoint)
        theirs = LoraSpec.from_dict(saved[LORA_KEY]["spec"])
        shape = ("rank", "alpha", "targets", "train_heads")
        differ = [k for k in shape if getattr(theirs, k) != getattr(self.lora_spec, k)]
        if differ:
            wanted = ", ".join(f"lora_{k}={getattr(theirs, k)!r}" for k in differ)
            raise ValueError(
                f"{checkpoint} holds LoRA adapters with {wanted}; this phase asks for "
                f"{', '.join(f'{getattr(self.lora_spec, k)!r}' for k in differ)}. Pass {wanted} "
                "to continue those adapters (or finetune='full' to train their merged model)."
            )
        state = {f"xtts.{k.removeprefix('xtts.')}": v for k, v in saved["model"].items()}
        load_trained(self, GPT, state, checkpoint)

    def checkpoint_info(self) -> dict[str, Any]:
        """What every checkpoint of this model carries beside its state."""
        return {LORA_KEY: self.lora_info}

    def trained_weights(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if args or kwargs:  # torch's own recursive form: leave it alone
            return super().state_dict(*args, **kwargs)
        return trainable_state(self, GPT)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        load_trained(self, GPT, dict(state_dict), "the checkpoint being restored")
        return torch.nn.modules.module._IncompatibleKeys([], [])

    def get_optimizer(self) -> torch.optim.Optimizer:
        """coqui's AdamW groups (weight decay on weights only), holding the trained ones only."""
        optimizer = super().get_optimizer()  # no step taken yet: its groups can be narrowed
        trained = {id(p) for p in self.parameters() if p.requires_grad}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) in trained]
        optimizer.param_groups = [g for g in optimizer.param_groups if g["params"]]
        return optimizer

"""The phases' parameters: one dataclass per stage, mirrored by its notebook's parameters cell
(``tests/test_stages.py`` compares the values), the only place their defaults live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from voicebook.core.config import normalise
from voicebook.core.values import like
from voicebook.training.health import LR_FLOOR

STAGES = ("phase1", "phase2")
FINETUNE = ("full", "lora")
SELECT_BY = ("evidence", "loss")


@dataclass
class PhaseConfig:
    """Parameters shared by both phases (the notebooks' parameters cells mirror them)."""

    experiment: str = "demo"
    outputs_dir: str = ""  # "" = $VOICEBOOK_OUTPUTS or <repo>/outputs
    base_model: str = "tiny"  # "tiny", "xtts_v2" or a folder in the XTTS v2 layout
    dataset_dir: str = ""  # "" = outputs/<experiment>/dataset (the data-prep stage's output)
    lr: float = 5e-4
    epochs: int = 8
    max_steps: int = 0  # 0 = no cap; else stop after this many steps
    batch_size: int = 3
    grad_accum: int = 1
    eval_every: int = 20  # steps between evaluations (and at every epoch end)
    save_every: int = 45  # steps between checkpoints
    keep_checkpoints: int = 2
    keep_best: int = 3  # best models kept (lowest eval Mel CE), slim, named by step
    select_by: str = "evidence"  # the pick among them: "evidence" (what people hear) or "loss"
    select_takes: int = 2  # evidence: takes of each validation transcript per kept model
    select_asr_model: str = "base"  # evidence: its speech recogniser (voicebook.asr); "": loss
    patience_steps: int = 500  # stop when eval Mel CE has not improved for this many steps
    lr_floor: float = LR_FLOOR  # a learning rate strictly below this is flagged
    seed: int = 1
    language: str = "hu"
    export_checkpoint: str | int = "best"  # what export/ holds: "best", "final" or a step
    device: str = "auto"  # "auto" (the GPU when there is one), "cpu" or "cuda"
    precision: str = "fp32"  # "fp32"; on a GPU "bf16" or "fp16" mixed precision
    finetune: str = "full"  # "full": every GPT weight trains; "lora": adapters, the base frozen
    lora_rank: int = 8  # the adapters' rank (finetune="lora")
    lora_alpha: float = 16.0  # adapter scale = lora_alpha / lora_rank
    lora_dropout: float = 0.05  # dropout on the adapters' input
    lora_targets: str = "c_attn,c_proj,c_fc"  # GPT-2 block layers with adapters (attention, MLP)
    lora_train_heads: bool = False  # also train the text/mel embeddings and heads

    stage = "phase1"
    # Settings that do not change what is trained: changing them never starts a new run.
    NOT_TRAINING = ("export_checkpoint", "device", "select_by", "select_takes", "select_asr_model")
    # Where the run lives and what it reads, in the spelling given: "" or an absolute or relative
    # path to one folder mean the same. A run compares them resolved instead: its folder holds
    # the record, and ``voicebook.training.run`` compares the dataset and parent checkpoint.
    LOCATIONS = ("experiment", "outputs_dir", "dataset_dir", "init_from", "resume_from")
    LORA = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "lora_train_heads")

    def __post_init__(self) -> None:
        normalise(self)  # "1e-6" from a YAML file is the float papermill makes of it
        if self.finetune not in FINETUNE:
            raise ValueError(f"finetune={self.finetune!r}: use one of {', '.join(FINETUNE)}.")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by={self.select_by!r}: use one of {', '.join(SELECT_BY)}.")
        if int(self.keep_best) < 1 or int(self.select_takes) < 1:
            raise ValueError(
                f"keep_best={self.keep_best}, select_takes={self.select_takes}: at least 1 each."
            )
        self.lora_spec()  # validates the LoRA parameters when they are used

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def training_identity(self) -> dict[str, Any]:
        """The parameters that define the run (a finished run with the same ones is reused);
        the LoRA ones only when LoRA trains."""
        return self.identity_of(self.to_dict())

    @classmethod
    def identity_of(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``training_identity`` of recorded parameters (a run recorded before ``finetune``
        existed was a full one), numbers as numbers whatever their spelling."""
        values = {"finetune": "full", **values}
        ignored = cls.NOT_TRAINING + cls.LOCATIONS
        ignored += cls.LORA if values["finetune"] == "full" else ()
        known = {f.name: f.default for f in dataclasses.fields(cls)}
        return {
            k: like(known[k], v, k) if k in known else v
            for k, v in values.items()
            if k not in ignored
        }

    def trainer_settings(self, run_name: str, num_loader_workers: int) -> dict[str, Any]:
        """What ``voicebook.coqui.config.gpt_trainer_config`` takes from this phase (every
        value: it has no defaults of its own)."""
        keys = ("language", "lr", "batch_size", "epochs", "eval_every", "save_every",
                "keep_checkpoints", "seed", "precision")  # fmt: skip
        values = {k: getattr(self, k) for k in keys}
        return {**values, "run_name": run_name, "num_loader_workers": num_loader_workers}

    def lora_spec(self) -> Any:
        """The ``voicebook.coqui.lora.LoraSpec`` of a LoRA phase; None for full fine-tuning."""
        if self.finetune != "lora":
            return None
        from voicebook.coqui.lora import LoraSpec

        targets = self.lora_targets
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        return LoraSpec(
            int(self.lora_rank),
            float(self.lora_alpha),
            float(self.lora_dropout),
            tuple(targets),
            bool(self.lora_train_heads),
        )


@dataclass
class Phase1Config(PhaseConfig):
    init_from: str = ""  # "" = the base's weights; else a checkpoint (.pth) or export folder


@dataclass
class Phase2Config(PhaseConfig):
    resume_from: str | int = "best"  # phase 1's "best" or "final" checkpoint, a step, or a path
    lr: float = 2e-4
    epochs: int = 4

    stage = "phase2"


PARAMS = {"phase1": Phase1Config, "phase2": Phase2Config}


def params_for(stage: str, **values: Any) -> PhaseConfig:
    """The params dataclass of ``stage`` filled with ``values`` (unknown names are an error)."""
    cls = PARAMS[stage]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"Unknown {stage} parameter(s) {unknown}; known: {sorted(names)}.")
    return cls(**values)

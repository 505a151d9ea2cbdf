"""The GPTTrainer config every stage shares, and one way to read the dataset.

Training (phases 1 and 2) and evaluation (Mel CE / Text CE of every candidate on the same
held-out split) both build their GPTTrainer through ``gpt_trainer_config``, so the numbers come
from the same code. The model's architecture (every field of ``model_args``, the audio settings
and languages) comes whole from the base's ``config.json``: a base whose token limits, stride or
d-vector settings differ from XTTS v2's trains with its own.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

from voicebook.coqui.limits import (
    MAX_CONDITIONING_SAMPLES,
    MAX_TEXT_TOKENS,
    MAX_WAV_SAMPLES,
    MIN_CONDITIONING_SAMPLES,
)
from voicebook.core.paths import EVAL_META, TRAIN_META

# coqui's XTTS v2 fine-tuning recipe: AdamW on the GPT's weights, a step schedule that never
# fires in a fine-tune of this length, and length-grouped batches. AdamW is torch's fused
# kernel (the same update, one pass over each weight; on a CPU and on CUDA): the full-size
# GPT's update took 1.5-1.8 s of a 12 s step at batch 3 on 2 cores with the recipe's default
# (foreach), 0.35-0.65 s fused (benchmarks/bench_recipe.py --profile at full size).
OPTIMIZER_PARAMS = {"betas": [0.9, 0.96], "eps": 1e-8, "weight_decay": 1e-2, "fused": True}
LR_MILESTONES = [900000, 2700000, 5400000]
BATCH_GROUP_SIZE = 48


def gpt_trainer_module() -> Any:
    """coqui's ``gpt_trainer`` module (GPTArgs, GPTTrainerConfig, GPTTrainer), with torch's
    threads set back to the cores: importing it runs coqui's dataset module, which sets them
    to 1 (``voicebook.core.device.use_all_cores``)."""
    import TTS.tts.layers.xtts.trainer.gpt_trainer as module

    from voicebook.core.device import use_all_cores

    use_all_cores()
    return module


def gpt_trainer_model(config: Any, *, cached: bool = True, lora: Any = None) -> Any:
    """The GPTTrainer model for ``config``, which training and evaluation both build.

    By default it reads each clip's DVAE codes from the feature cache
    (``voicebook.coqui.cached``): coqui's losses without decoding every clip and running the
    DVAE at every step. ``cached=False`` is coqui's own GPTTrainer (tests and benchmarks
    compare the two).

    ``config.model_args.xtts_checkpoint`` may be a LoRA checkpoint (``voicebook.coqui.lora``):
    the model is then built on the full weights it sits on (the config is pointed at them) and
    its adapters are merged in, or, with ``lora`` (a ``LoraSpec``: a LoRA phase), continued.
    With ``lora`` and a full checkpoint, fresh adapters are added to it."""
    from voicebook.coqui.lora import apply_checkpoint, checked_weights, lora_info

    start = config.model_args.xtts_checkpoint
    info = lora_info(start)
    if info is not None:
        config.model_args.xtts_checkpoint = str(checked_weights(info, start))
    module = gpt_trainer_module()
    if lora is not None:
        from voicebook.coqui.lora_trainer import LoraGPTTrainer

        model = LoraGPTTrainer(config, lora, info)
        if info is not None:
            model.continue_adapters(start)
        return model
    model = module.GPTTrainer(config) if not cached else _cached_model(config)
    if info is not None:
        apply_checkpoint(model.xtts, start, merge=True)
    return model


def _cached_model(config: Any) -> Any:
    from voicebook.coqui.cached import CachedGPTTrainer

    return CachedGPTTrainer(config)


def model_args(base_dir: str | os.PathLike) -> Any:
    """GPTArgs holding every model field of the base's ``config.json`` plus the training paths
    and XTTS's data limits (``voicebook.coqui.limits``)."""
    from voicebook.coqui.models import load_config

    GPTArgs = gpt_trainer_module().GPTArgs
    base = Path(base_dir)
    known = {f.name for f in dataclasses.fields(GPTArgs)}
    recorded = load_config(base).model_args.to_dict()
    args = GPTArgs(**{k: v for k, v in recorded.items() if k in known})
    args.max_conditioning_length = MAX_CONDITIONING_SAMPLES
    args.min_conditioning_length = MIN_CONDITIONING_SAMPLES
    args.max_wav_length = MAX_WAV_SAMPLES  # XTTSDataset skips longer clips
    args.max_text_length = MAX_TEXT_TOKENS
    args.mel_norm_file = str(base / "mel_stats.pth")
    args.dvae_checkpoint = str(base / "dvae.pth")
    args.xtts_checkpoint = str(base / "model.pth")
    args.tokenizer_file = str(base / "vocab.json")
    return args


# What every phase's trainer config holds whatever the parameters: coqui's recipe where it has
# one, tensorboard logging, no test synthesis while training (the evaluation stage does that),
# the best judged on the eval Mel CE at every evaluation.
FIXED_SETTINGS = {
    "project_name": "voicebook",
    "dashboard_logger": "tensorboard",
    "logger_uri": None,
    "batch_group_size": BATCH_GROUP_SIZE,
    "run_eval": True,
    "plot_step": 100,
    "print_step": 25,  # the trainer's console log; voicebook's own view shows every step
    "log_model_step": 1000,
    "save_checkpoints": True,
    "save_best_after": 0,
    "target_loss": "loss_mel_ce",
    "print_eval": False,
    "optimizer": "AdamW",
    "optimizer_wd_only_on_weights": True,
    "lr_scheduler": "MultiStepLR",
    "test_sentences": [],
    "test_delay_epochs": 10**9,
}
# An eval forward keeps no activations for a backward and no gradients: a batch of 4 clips of
# it takes less memory than one clip of a training step, and fewer, larger batches keep the
# cores (or the GPU) busier. Evaluation batches are up to this many times the training batch.
EVAL_BATCH_PER_TRAIN_CLIP = 4


def eval_batch_size(batch_size: int, n_eval: int) -> int:
    """The largest evaluation batch that fits where a training batch of ``batch_size`` fits,
    never more than the ``n_eval`` held-out clips (one batch when they all fit)."""
    return max(1, min(n_eval, EVAL_BATCH_PER_TRAIN_CLIP * batch_size))


def gpt_trainer_config(
    base_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    language: str,
    lr: float,
    batch_size: int,
    epochs: int,
    eval_every: int | None,
    save_every: int,
    keep_checkpoints: int,
    seed: int,
    run_name: str,
    num_loader_workers: int,
    precision: str,
):
    """A GPTTrainerConfig for fine-tuning the GPT of the base in ``base_dir`` on a dataset folder.

    Every value is the caller's (a phase passes its ``PhaseConfig``'s): none has a default here,
    so a stage's defaults live once, in its config dataclass.

    ``dataset_dir`` is the data-prep stage's output (``metadata_train.csv``/``metadata_eval.csv``
    in coqui's ``coqui`` format, paths relative to the folder). ``precision`` "bf16" or "fp16"
    turns on the trainer's mixed precision (a GPU only: ``voicebook.core.device.check_precision``).
    The evaluation batch is the training batch until the stage sets it (``eval_batch_size``).
    """
    from voicebook.coqui.base import validate_base_dir
    from voicebook.coqui.models import load_config

    base = validate_base_dir(base_dir)
    recorded = load_config(base)
    return gpt_trainer_module().GPTTrainerConfig(
        output_path=str(output_path),
        model_args=model_args(base),
        audio=recorded.audio,
        languages=list(recorded.languages),
        run_name=run_name,
        datasets=[dataset_config(dataset_dir, language)],
        batch_size=batch_size,
        eval_batch_size=batch_size,
        num_loader_workers=num_loader_workers,
        num_eval_loader_workers=num_loader_workers,
        epochs=epochs,
        run_eval_steps=eval_every,
        save_step=save_every,
        save_n_checkpoints=keep_checkpoints,
        mixed_precision=precision != "fp32",
        precision=precision if precision != "fp32" else "fp16",  # unused when not mixed
        optimizer_params=dict(OPTIMIZER_PARAMS),
        lr=lr,
        lr_scheduler_params={"milestones": list(LR_MILESTONES), "gamma": 0.5},
        training_seed=seed,
        **copy.deepcopy(FIXED_SETTINGS),
    )


# Where a phase's parameters would go, a config that trains nothing holds these: it reads the
# dataset as the trainer does (``clip_samples``) or scores a checkpoint (``losses.CheckpointLosses``).
NOT_TRAINING = {"lr": 0.0, "epochs": 0, "eval_every": None, "save_every": 0, "keep_checkpoints": 0,
                "run_name": "not-training", "num_loader_workers": 0, "precision": "fp32"}  # fmt: skip


def reading_config(
    base_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    language: str,
    batch_size: int,
    seed: int,
):
    """``gpt_trainer_config`` for what reads clips or runs eval steps without training."""
    return gpt_trainer_config(
        base_dir, dataset_dir, output_path,
        language=language, batch_size=batch_size, seed=seed, **NOT_TRAINING,
    )  # fmt: skip


def dataset_config(dataset_dir: str | os.PathLike, language: str) -> Any:
    """coqui's dataset config of a data-prep stage's output folder."""
    from TTS.config.shared_configs import BaseDatasetConfig

    dataset = Path(dataset_dir)
    for meta in (TRAIN_META, EVAL_META):
        if not (dataset / meta).is_file():
            raise FileNotFoundError(
                f"No {meta} in {dataset}: run the data-prep stage (00_data_prep) first."
            )
    return BaseDatasetConfig(
        formatter="coqui",
        dataset_name="voicebook",
        path=str(dataset),
        meta_file_train=TRAIN_META,
        meta_file_val=EVAL_META,
        language=language,
    )


def load_samples(config: Any) -> tuple[list[dict], list[dict]]:
    """Train and eval samples of the dataset in ``config`` (the data-prep stage's fixed split)."""
    from TTS.tts.datasets import load_tts_samples

    return load_tts_samples(config, eval_split=True)


def usable_samples(config: Any, samples: list[dict], sample_rate: int) -> list[dict]:
    """The samples coqui's XTTSDataset keeps (it silently skips too long/short/UNK clips).

    Its own check (``check_eval_samples``, no random draw) on ``CachedXTTSDataset``, whose
    ``load_item`` reads the clip once with soundfile: the same samples as coqui's loader, which
    reads each clip twice and far slower; the same clips kept."""
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    from voicebook.coqui.cached import CachedXTTSDataset

    tokenizer = VoiceBpeTokenizer(config.model_args.tokenizer_file)
    dataset = CachedXTTSDataset(config, list(samples), tokenizer, sample_rate, True, codes={})
    return dataset.samples  # check_eval_samples dropped the ones training never sees

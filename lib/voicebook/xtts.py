"""The coqui-tts glue every stage shares: one GPTTrainer config, one way to load the dataset.

Training (phases 1 and 2) and evaluation (Mel CE / Text CE of every candidate on the same
held-out split) both build their GPTTrainer through ``gpt_trainer_config``, so the numbers come
from the same code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from voicebook.models import validate_base_dir

TRAIN_META = "metadata_train.csv"
EVAL_META = "metadata_eval.csv"


def gpt_trainer_config(
    base_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    language: str = "hu",
    lr: float = 5e-6,
    batch_size: int = 3,
    epochs: int = 10,
    eval_every: int | None = None,
    save_every: int = 10_000,
    keep_checkpoints: int = 1,
    seed: int = 1,
    run_name: str = "run",
    num_loader_workers: int = 0,
    print_step: int = 25,
):
    """A GPTTrainerConfig for fine-tuning the GPT of the base in ``base_dir`` on a dataset folder.

    ``dataset_dir`` is the data-prep stage's output (``metadata_train.csv``/``metadata_eval.csv``
    in coqui's ``coqui`` format, paths relative to the folder). Settings follow coqui's XTTS v2
    fine-tuning recipe; the model size comes from the base's own ``config.json``.
    """
    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsAudioConfig
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs, GPTTrainerConfig

    from voicebook.models import load_config

    base = validate_base_dir(base_dir)
    dataset = Path(dataset_dir)
    for meta in (TRAIN_META, EVAL_META):
        if not (dataset / meta).is_file():
            raise FileNotFoundError(
                f"No {meta} in {dataset}: run the data-prep stage (00_data_prep) first."
            )
    base_args = load_config(base).model_args
    model_args = GPTArgs(
        max_conditioning_length=132300,  # 6 s
        min_conditioning_length=66150,  # 3 s
        max_wav_length=255995,  # ~11.6 s: XTTSDataset skips longer clips
        max_text_length=200,
        mel_norm_file=str(base / "mel_stats.pth"),
        dvae_checkpoint=str(base / "dvae.pth"),
        xtts_checkpoint=str(base / "model.pth"),
        tokenizer_file=str(base / "vocab.json"),
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        gpt_use_masking_gt_prompt_approach=True,
        gpt_use_perceiver_resampler=True,
        gpt_layers=base_args.gpt_layers,
        gpt_n_model_channels=base_args.gpt_n_model_channels,
        gpt_n_heads=base_args.gpt_n_heads,
        decoder_input_dim=base_args.decoder_input_dim,
    )
    config = GPTTrainerConfig(
        output_path=str(output_path),
        model_args=model_args,
        run_name=run_name,
        project_name="voicebook",
        dashboard_logger="tensorboard",
        logger_uri=None,
        audio=XttsAudioConfig(sample_rate=22050, dvae_sample_rate=22050, output_sample_rate=24000),
        datasets=[
            BaseDatasetConfig(
                formatter="coqui",
                dataset_name="voicebook",
                path=str(dataset),
                meta_file_train=TRAIN_META,
                meta_file_val=EVAL_META,
                language=language,
            )
        ],
        batch_size=batch_size,
        batch_group_size=48,
        eval_batch_size=batch_size,
        num_loader_workers=num_loader_workers,
        num_eval_loader_workers=0,
        epochs=epochs,
        run_eval=True,
        run_eval_steps=eval_every,
        print_step=print_step,
        plot_step=100,
        log_model_step=1000,
        save_step=save_every,
        save_n_checkpoints=keep_checkpoints,
        save_checkpoints=True,
        save_best_after=0,
        target_loss="loss_mel_ce",
        print_eval=False,
        mixed_precision=False,
        optimizer="AdamW",
        optimizer_wd_only_on_weights=True,
        optimizer_params={"betas": [0.9, 0.96], "eps": 1e-8, "weight_decay": 1e-2},
        lr=lr,
        lr_scheduler="MultiStepLR",
        lr_scheduler_params={"milestones": [900000, 2700000, 5400000], "gamma": 0.5},
        training_seed=seed,
        test_sentences=[],
        test_delay_epochs=10**9,  # no test synthesis during training: evaluation does that
    )
    return config


def load_samples(config: Any) -> tuple[list[dict], list[dict]]:
    """Train and eval samples of the dataset in ``config`` (the data-prep stage's fixed split)."""
    from TTS.tts.datasets import load_tts_samples

    return load_tts_samples(config, eval_split=True)


def gpt_trainer_model(config: Any, *, cached: bool = True):
    """The GPTTrainer model for ``config``: by default reading cached DVAE codes
    (``voicebook.coqui.cached``), which gives coqui's losses without decoding every clip and
    running the DVAE at every step; ``cached=False`` is coqui's own GPTTrainer."""
    if cached:
        from voicebook.coqui.cached import CachedGPTTrainer

        return CachedGPTTrainer(config)
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTTrainer

    return GPTTrainer(config)

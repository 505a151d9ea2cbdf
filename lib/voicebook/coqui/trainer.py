"""coqui's Trainer with voicebook's recording and guards: every use of its private members.

``new_trainer`` builds a ``PhaseTrainer`` (a subclass of coqui-trainer's ``Trainer`` around
coqui-tts's ``GPTTrainer`` model) that records every step and evaluation into a recorder
(``voicebook.training.recorder.PhaseRecorder``), checks health at each of them, writes the best
model slim (weights only, like the export: the optimizer state is 2x the GPT and only resume
needs it) and resumes only from the periodic ``checkpoint_<step>.pth`` files, which keep it.

The recorder is duck-typed: ``row``, ``events``, ``save_status``, ``status``, ``monitor`` and
``last_eval_step``. ``TrainingStopped`` raised from it ends ``fit`` cleanly.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from voicebook.training.checkpoints import run_checkpoints
from voicebook.training.health import HealthEvent, TrainingStopped


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The periodic checkpoint with the highest step (what a continued run resumes from)."""
    found = run_checkpoints(run_dir, "checkpoint")
    return found[0] if found else None


def new_trainer(
    config: Any,
    recorder: Any,
    *,
    run_dir: Path | None,
    output_path: Path,
    train_samples: list[dict],
    eval_samples: list[dict],
    grad_accum: int,
    max_steps: int,
    device: torch.device,
    lora: Any = None,
):
    """A PhaseTrainer for a new run in ``output_path``, or continuing the run in ``run_dir``;
    ``lora`` (a ``coqui.lora.LoraSpec``) trains LoRA adapters instead of every GPT weight."""
    from trainer import TrainerArgs

    from voicebook.coqui.config import gpt_trainer_model

    model = gpt_trainer_model(config, lora=lora)
    args = TrainerArgs(continue_path=str(run_dir or ""), grad_accum_steps=grad_accum)
    return make_trainer_class()(
        args,
        config,
        output_path=run_dir or output_path,
        model=model,
        train_samples=train_samples,
        eval_samples=eval_samples,
        parse_command_line_args=False,
        recorder=recorder,
        max_steps=max_steps,
        device=device,
    )


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _info(model: Any) -> dict[str, Any]:
    """What a model's checkpoints carry beside its state (a LoRA model's "lora" entry)."""
    return model.checkpoint_info() if hasattr(model, "checkpoint_info") else {}


def make_trainer_class():
    """The coqui Trainer with voicebook's recording and guards (built lazily: coqui is heavy)."""
    from trainer import Trainer
    from trainer.generic_utils import KeepAverage

    from voicebook.training.bundle import write_slim

    class PhaseTrainer(Trainer):
        """Records every step and evaluation, evaluates/keeps the best at every eval, guards."""

        def __init__(self, *args: Any, recorder: Any, max_steps: int, device: torch.device, **kw):
            self.recorder, self.max_steps, self.device = recorder, max_steps, torch.device(device)
            super().__init__(*args, **kw)

        # --- what voicebook's phase runner calls (public names for private members) ---------

        @property
        def steps_done(self) -> int:
            return self.total_steps_done

        @property
        def run_dir(self) -> Path:
            return Path(self.output_path)

        @property
        def resumed_from(self) -> Path | None:
            """The checkpoint a continued run restored, None for a new run."""
            return Path(self.args.restore_path) if self.args.continue_path else None

        def fit_steps(self) -> None:
            """Train to the end (epochs, max_steps or a stop); ``fit()`` would also delete the
            run folder and ``sys.exit`` on an early failure, losing its logs."""
            self._fit()

        @property
        def trained_weights(self) -> int:
            """Weights the optimizer updates (the GPT's, or a LoRA phase's adapters)."""
            groups = [g for opt in _as_list(self.optimizer) for g in opt.param_groups]
            return sum(p.numel() for g in groups for p in g["params"])

        @property
        def gpt_weights(self) -> int:
            return sum(p.numel() for p in self._get_model().xtts.gpt.parameters())

        def save_resume_point(self) -> None:
            """A checkpoint to resume from after an interruption, named as coqui names its
            periodic ones: ``checkpoint_<n>`` is written inside step n and holds n + 1 updates,
            and restoring continues at step n + 1. Saving ``checkpoint_<steps done>`` would skip
            a step number on resume."""
            if self.total_steps_done == 0:  # nothing trained: a re-run starts afresh
                return
            self.total_steps_done -= 1
            try:
                self.save_checkpoint()
            finally:
                self.total_steps_done += 1

        def last_checkpoint(self) -> Path:
            self.save_checkpoint()
            return self.run_dir / f"checkpoint_{self.total_steps_done}.pth"

        def weights_finite(self) -> bool:
            return all(torch.isfinite(p).all() for p in self.model.parameters())

        def close(self) -> None:
            self.dashboard_logger.finish()

        # --- coqui's hooks ------------------------------------------------------------------

        def setup_training_environment(self, args, config, gpu):
            # coqui uses every GPU torch sees; device="cpu" keeps the run (and its batches) off it
            use_cuda, num_gpus = Trainer.setup_training_environment(args, config, gpu)
            return use_cuda and self.device.type == "cuda", num_gpus

        def format_batch(self, batch):
            if self.use_cuda:
                return super().format_batch(batch)
            # coqui's to_cuda moves every batch to any GPU torch sees: keep a CPU run on the CPU
            model = self._get_model()
            return model.format_batch_on_device(model.format_batch(batch))

        @staticmethod
        def init_training(args, coqpit_overrides, config=None):
            config, new_fields = Trainer.init_training(args, coqpit_overrides, config)
            if args.continue_path:
                # Resume from the newest periodic checkpoint: best models are slim (no
                # optimizer state), so coqui's pick of the newest of both would lose it.
                newest = newest_checkpoint(Path(args.continue_path))
                args.restore_path = str(newest) if newest else args.restore_path
                new_fields["restore_path"] = args.restore_path
            return config, new_fields

        def _compute_loss(self, batch, criterion, optimizer_idx):
            outputs, loss_dict = super()._compute_loss(batch, criterion, optimizer_idx)
            if loss_dict:  # before backward: a NaN never reaches the weights
                losses = {k: float(loss_dict[k].detach()) for k in ("loss_mel_ce", "loss_text_ce")}
                self.recorder.events(
                    self.recorder.monitor.check_loss(self.total_steps_done, losses)
                )
            return outputs, loss_dict

        def train_step(self, batch, batch_n_steps, step, loader_start_time):
            index = self.total_steps_done
            outputs, losses = super().train_step(batch, batch_n_steps, step, loader_start_time)
            if outputs is None:
                return outputs, losses
            stepped = (step + 1) % self.grad_accum_steps == 0 or step + 1 == batch_n_steps
            norm = float(losses.get("grad_norm", 0.0)) if stepped else None
            mel, text, lr = losses["loss_mel_ce"], losses["loss_text_ce"], losses["current_lr"]
            self.recorder.row(index, "train", mel, text, lr, norm)
            self.recorder.events(self.recorder.monitor.on_train(index, mel, lr, norm))
            if self.max_steps and self.total_steps_done >= self.max_steps:
                raise TrainingStopped(
                    HealthEvent(index, "max_steps", "info", f"reached max_steps={self.max_steps}")
                )
            return outputs, losses

        def eval_epoch(self) -> None:
            step = self.total_steps_done
            if self.recorder.last_eval_step == step:  # the epoch-end eval right after a step eval
                return
            self.keep_avg_eval = KeepAverage()  # a fresh average per evaluation, not per epoch
            super().eval_epoch()
            self.recorder.last_eval_step = step
            avg = self.keep_avg_eval.avg_values
            mel, text = avg["avg_loss_mel_ce"], avg["avg_loss_text_ce"]
            self.recorder.row(
                step, "eval", mel, text, self.optimizer[0].param_groups[0]["lr"], None
            )
            self.save_best_model()
            best = self.run_dir / f"best_model_{step}.pth"
            if best.is_file():
                self.recorder.save_status(
                    best_step=step, best_mel_ce=mel, best_text_ce=text, best_checkpoint=str(best)
                )
            self.recorder.events(self.recorder.monitor.on_eval(step, mel, text))

        def save_best_model(self) -> None:
            """The trainer's rule (lower eval target loss wins), written slim: weights only,
            atomically, ``best_model.pth`` a hard link, older ``best_model_<step>.pth`` removed."""
            eval_loss = self._pick_target_avg_loss(self.keep_avg_eval)
            if eval_loss is None or eval_loss >= self.best_loss["eval_loss"]:
                return
            step, out = self.total_steps_done, self.run_dir
            train_loss = self._pick_target_avg_loss(self.keep_avg_train) or math.inf
            self.best_loss = {"train_loss": train_loss, "eval_loss": eval_loss}
            path = out / f"best_model_{step}.pth"
            model = self._get_model()
            write_slim(
                model.state_dict(), path, step=step, model_loss=self.best_loss, **_info(model)
            )
            for older in out.glob("best_model_*.pth"):
                if older != path:
                    older.unlink()
            shortcut = out / "best_model.pth"
            shortcut.unlink(missing_ok=True)
            try:
                os.link(path, shortcut)
            except OSError:  # file systems without hard links
                shutil.copy2(path, shortcut)

        def save_checkpoint(self) -> None:
            """coqui's periodic checkpoint, plus what the model says every checkpoint carries
            (a LoRA model: the spec and the weights its adapters sit on)."""
            from trainer.io import save_checkpoint

            save_checkpoint(
                self.config,
                self._get_model(),
                self.output_path,
                current_step=self.total_steps_done,
                epoch=self.epochs_done,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler if self.use_amp_scaler else None,
                model_loss={
                    "train_loss": self._target_loss_so_far(self.keep_avg_train),
                    "eval_loss": self._target_loss_so_far(self.keep_avg_eval),
                },
                save_n_checkpoints=self.config.save_n_checkpoints,
                **_info(self._get_model()),
            )

        def _target_loss_so_far(self, keep_avg) -> float | None:
            """The target loss, or None where an interrupt came before the batch computed it
            (coqui raises then; a resume point must still be written)."""
            try:
                return self._pick_target_avg_loss(keep_avg)
            except ValueError:
                return None

        def _restore_best_loss(self) -> None:
            super()._restore_best_loss()
            # The trainer restores the *last* eval loss as the best; use the recorded best.
            best = self.recorder.status.get("best_mel_ce")
            if self.continue_run and best is not None:
                self.best_loss = {"train_loss": math.inf, "eval_loss": best}

    return PhaseTrainer

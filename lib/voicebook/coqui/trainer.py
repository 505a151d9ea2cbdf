"""coqui's Trainer with a phase's recording, guards and saves: every use of its private members.

``new_trainer`` builds a ``PhaseTrainer`` (a subclass of coqui-trainer's ``Trainer`` around
coqui-tts's ``GPTTrainer`` model). It reports every loss, step and evaluation to ``hooks`` (the
stage's recorder, duck-typed: ``on_loss``, ``on_train``, ``on_eval``, ``on_best``; whatever they
raise ends ``fit``: the stage's stop), writes the best model slim (weights only: the optimizer
state is 2x the GPT and only resume needs it) and resumes only from the periodic
``checkpoint_<step>.pth`` files, which keep it; the stage says which one (``restore``).

The step path never waits on the disk (``BackgroundSaves``): a best model or a periodic checkpoint
is handed to a ``voicebook.core.fileio.BackgroundWriter`` and written atomically (a kill mid-write
leaves the previous file). A best model's weights are copied to host memory on the training
thread, into buffers kept from one best to the next (fresh memory is slow to fault in), and
written from there at low priority past the page cache (``DirectFile``: a buffered write would
cost the concurrent steps the kernel's copying and writeback). A best still waiting for its turn
when a better one comes is replaced, never written. A periodic checkpoint (3x the weights) is
copied the same way beside a GPU; on a CPU it is written from the live state (a copy would add 3x
the weights to the RAM), and a hook before each update waits until the writer has let go of it,
so the write overlaps the next forward and backward. ``hooks.on_best`` runs on the training
thread once the file is on disk, so the status never names a file that is not there yet.
``save_seconds`` is what saves cost the training thread. What each choice saved:
``benchmarks/README.md``.

This module imports coqui's trainer at the top (the class subclasses it): import it lazily.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from trainer import Trainer, TrainerArgs
from trainer.generic_utils import KeepAverage
from trainer.io import keep_n_checkpoints

from voicebook.core.fileio import BackgroundWriter, DirectFile

Weights = dict[str, torch.Tensor]


def new_trainer(
    config: Any,
    hooks: Any,
    *,
    output_path: Path,
    samples: tuple[list[dict], list[dict]],
    grad_accum: int,
    device: torch.device,
    slim: Callable[[Weights], Weights],
    run_dir: Path | None = None,
    restore: Path | None = None,
    best_eval_loss: float | None = None,
    lora: Any = None,
    keep_best: int = 1,
    kept: list[tuple[float, int, Path]] | None = None,
) -> PhaseTrainer:
    """A PhaseTrainer for a new run in ``output_path``, or continuing the run in ``run_dir`` from
    its checkpoint ``restore`` (whose recorded best eval loss is ``best_eval_loss``). ``slim``
    picks a best model's weights from the model's state, without copying them; ``lora`` (a
    ``coqui.lora.LoraSpec``) trains LoRA adapters instead of every GPT weight. The run keeps its
    ``keep_best`` best models by eval Mel CE; ``kept`` lists a continued run's (Mel CE, step,
    path)."""
    from voicebook.coqui.config import gpt_trainer_model

    log_to_run_folder_only()
    model = gpt_trainer_model(config, lora=lora)
    args = TrainerArgs(continue_path=str(run_dir or ""), grad_accum_steps=grad_accum)
    return PhaseTrainer(
        args,
        config,
        output_path=run_dir or output_path,
        model=model,
        train_samples=samples[0],
        eval_samples=samples[1],
        parse_command_line_args=False,
        setup=PhaseSetup(hooks, device, slim, restore, best_eval_loss, keep_best, kept or []),
    )


def log_to_run_folder_only() -> None:
    """coqui's trainer logs to stderr (a handler its ``trainer.logger`` adds on import) and to
    the run folder's ``trainer_0_log.txt`` (a handler each Trainer adds). A notebook then shows
    coqui's lines on a pink stderr background beside the stage's own, some of them wrong for
    this run ("Torch CUDNN: True" on a CPU, a parameter count of its own): its log stays in the
    run folder only. A file handler of an earlier run in this process is closed too."""
    log = logging.getLogger("trainer")
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


class PhaseSetup:
    """What the stage gives the trainer beside coqui's arguments (see ``new_trainer``)."""

    def __init__(self, hooks, device, slim, restore, best_eval_loss, keep_best=1, kept=()):
        self.hooks, self.device, self.slim = hooks, torch.device(device), slim
        self.restore, self.best_eval_loss = restore, best_eval_loss
        self.keep_best = max(int(keep_best), 1)
        self.kept = list(kept)  # a continued run's kept bests: (eval Mel CE, step, path)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _info(model: Any) -> dict[str, Any]:
    """What a model's checkpoints carry beside its state (a LoRA model's "lora" entry)."""
    return model.checkpoint_info() if hasattr(model, "checkpoint_info") else {}


def host_copy(value: Any, into: Weights | None = None) -> Any:
    """``value`` (a state: tensors in dicts and lists) with every tensor copied to host memory;
    ``into`` (a flat dict like ``value``) gives buffers to copy into where the shapes match."""
    if torch.is_tensor(value):
        if value.is_cuda:  # page-locked: the copy runs at the bus's speed
            return torch.empty_like(value, device="cpu", pin_memory=True).copy_(value.detach())
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        into = into or {}
        return {k: _copy_into(v, into.get(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(host_copy(v) for v in value)
    return value


def _copy_into(value: Any, buffer: torch.Tensor | None) -> Any:
    fits = buffer is not None and torch.is_tensor(value) and buffer.shape == value.shape
    if fits and buffer.dtype == value.dtype:
        return buffer.copy_(value.detach())
    return host_copy(value)


def _prune_bests(out: Path, path: Path, kept: Callable[[], list[Path]]) -> Callable[[], None]:
    """Once ``path`` (a new kept best) is on disk: the best models no longer among the kept
    ones (``kept()``, best first, read then) removed, ``best_model.pth`` a hard link to the
    best one on disk (a copy on file systems without them). A best is never removed before the
    one that pushed it out is safely written."""

    def prune() -> None:
        keep = kept()
        for older in out.glob("best_model_*.pth"):
            if older != path and older not in keep:
                older.unlink(missing_ok=True)
        best = next((k for k in keep if k.is_file()), path)
        shortcut = out / "best_model.pth"
        shortcut.unlink(missing_ok=True)
        try:
            os.link(best, shortcut)
        except OSError:
            shutil.copy2(best, shortcut)

    return prune


def _torch_save(value: Any, partial: Path, direct: bool = False) -> bool:
    """``torch.save`` without the zip records' CRC32: for a full-size best model that checksum is
    most of the writer's CPU time, which the training threads lose; the atomic rename already
    guarantees a whole file, and ``torch.load`` reads it. (A process-wide setting: only the writer thread saves
    while a phase trains.) ``direct``: past the page cache (``DirectFile``), for a host copy
    whose write nothing waits for; returns whether it went past it."""
    from torch.utils.serialization import config

    checksum = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        if direct:
            with DirectFile(partial) as file:
                torch.save(value, file)
            return file.direct
        torch.save(value, partial)
        return False
    finally:
        config.save.compute_crc32 = checksum


def _torch_save_direct(value: Any, partial: Path) -> bool:
    return _torch_save(value, partial, direct=True)


class BackgroundSaves:
    """The trainer's background writes (see the module doc); ``copy``: best models from a host
    copy (the default) rather than the live weights; ``blocked_seconds`` is how long the
    optimizer's updates waited for the writer; ``replaced`` counts best models that a better
    one replaced before their turn to be written."""

    def __init__(self, copy: bool = True) -> None:
        self.writer = BackgroundWriter()
        self.copy = copy
        # Host copies of best models, kept from one best to the next (copying into mapped pages
        # is 5-20x faster than into fresh memory): one being written, one waiting its turn.
        self.buffers: list[Weights | None] = [None, None]
        self._slot_of: dict[Path, int] = {}  # the buffer of each best not yet written
        self._slots = threading.Lock()  # _slot_of: the writer's thread frees a slot
        self.blocked_seconds = 0.0
        self.replaced = 0
        self.written_direct = 0  # best models written past the page cache

    def guard(self, optimizers: list) -> None:
        """Before each update, wait until no write still reads the live weights."""
        for optimizer in optimizers:
            optimizer.register_step_pre_hook(self._before_update)

    def _before_update(self, *_: Any) -> None:
        start = time.perf_counter()
        self.writer.wait_released()
        self.blocked_seconds += time.perf_counter() - start

    def best(
        self, path: Path, weights: Weights, info: dict, then: Callable[[], None]
    ) -> Path | None:
        """``{"model": weights, **info}`` to ``path``. With ``copy``, the weights are copied to
        host memory here, on the caller's thread (a fraction of a step; less from a GPU),
        and written from the copy in the background, past the page cache. A best still waiting
        its turn is replaced by this one: its path is returned (it is never written)."""
        if not self.copy:
            content = {"model": weights, **info}
            self.writer.submit(path, lambda: content, _torch_save, then, holds="until_written")
            return None
        waiting = self.writer.withdraw("best")
        with self._slots:
            slot = self._slot_of.pop(waiting.path) if waiting else self._free_slot()
            self._slot_of[path] = slot
        self.replaced += waiting is not None
        self.buffers[slot] = host_copy(weights, self.buffers[slot])
        content = {"model": self.buffers[slot], **info}
        write = self._written_from(path)  # the copy is made: the live weights are free
        self.writer.submit(path, lambda: content, write, then, holds="nothing", key="best")
        return waiting.path if waiting else None

    def _free_slot(self) -> int:
        """The buffer no waiting or running write reads (at most one is: the one being written,
        since a new best withdraws the waiting one)."""
        return next(slot for slot in (0, 1) if slot not in self._slot_of.values())

    def _written_from(self, path: Path) -> Callable[[Any, Path], None]:
        def write(value: Any, partial: Path) -> None:
            try:
                self.written_direct += bool(_torch_save_direct(value, partial))
            finally:  # the buffer is free for the next best, written or not
                with self._slots:
                    self._slot_of.pop(path, None)

        return write

    def checkpoint(self, path: Path, content: dict, then: Callable[[], None], copy: bool) -> None:
        """``content`` (live state) to ``path``: from a host copy (past the page cache), or from
        the state itself (through it: the update waits for that write, and the page cache
        takes it fastest)."""
        if copy:
            self.writer.submit(path, lambda: host_copy(content), _torch_save_direct, then)
        else:
            self.writer.submit(path, lambda: content, _torch_save, then, holds="until_written")


class PhaseTrainer(Trainer):
    """coqui's Trainer that reports to the stage's hooks, keeps the best at every eval and
    writes in the background (see the module doc)."""

    def __init__(self, *args: Any, setup: PhaseSetup, **kw: Any):
        self.setup, self.hooks, self.device = setup, setup.hooks, setup.device
        self.saves = BackgroundSaves()
        self.pending_best: dict[Path, tuple[int, float, float]] = {}
        # the kept best models (eval Mel CE, step, path), best first: written or being written
        self.kept: list[tuple[float, int, Path]] = sorted(setup.kept)[: setup.keep_best]
        self.last_eval_step: int | None = None
        self.submit_seconds = 0.0  # the training thread's time handing saves over
        super().__init__(*args, **kw)
        self.saves.guard(_as_list(self.optimizer))

    # --- what voicebook's phase runner calls (public names for private members) ------------

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
        """Train to the end (epochs or a stop raised by a hook); ``fit()`` would also delete
        the run folder and ``sys.exit`` on an early failure, losing its logs."""
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
        self._save_checkpoint_now(self.total_steps_done - 1)

    def last_checkpoint(self) -> Path:
        return self._save_checkpoint_now(self.total_steps_done)

    def weights_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.model.parameters())

    @property
    def save_seconds(self) -> float:
        """What background saves cost the training thread: handing them over, and waits."""
        return self.submit_seconds + self.saves.blocked_seconds

    def finish_writes(self) -> None:
        """Every background write on disk, and reported."""
        self._report_written(self.saves.writer.wait())

    def close(self) -> None:
        self.finish_writes()
        self.dashboard_logger.finish()

    # --- coqui's hooks ----------------------------------------------------------------------

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

    def init_training(self, args, coqpit_overrides, config=None):
        config, new_fields = Trainer.init_training(args, coqpit_overrides, config)
        if args.continue_path and self.setup.restore:
            # the stage's pick (the newest periodic checkpoint that opens): best models are
            # slim (no optimizer state), so coqui's pick of the newest of both would lose it
            args.restore_path = new_fields["restore_path"] = str(self.setup.restore)
        return config, new_fields

    def _compute_loss(self, batch, criterion, optimizer_idx):
        outputs, loss_dict = super()._compute_loss(batch, criterion, optimizer_idx)
        if loss_dict:  # before backward: a NaN never reaches the weights
            losses = {k: float(loss_dict[k].detach()) for k in ("loss_mel_ce", "loss_text_ce")}
            self.hooks.on_loss(self.total_steps_done, losses)
        return outputs, loss_dict

    def train_step(self, batch, batch_n_steps, step, loader_start_time):
        index = self.total_steps_done
        outputs, losses = super().train_step(batch, batch_n_steps, step, loader_start_time)
        self._report_written(self.saves.writer.done())
        if outputs is None:
            return outputs, losses
        stepped = (step + 1) % self.grad_accum_steps == 0 or step + 1 == batch_n_steps
        norm = float(losses.get("grad_norm", 0.0)) if stepped else None
        mel, text, lr = losses["loss_mel_ce"], losses["loss_text_ce"], losses["current_lr"]
        self.hooks.on_train(index, mel, text, lr, norm)
        return outputs, losses

    def eval_epoch(self) -> None:
        step = self.total_steps_done
        if self.last_eval_step == step:  # the epoch-end eval right after a step eval
            return
        start = time.perf_counter()
        self.keep_avg_eval = KeepAverage()  # a fresh average per evaluation, not per epoch
        super().eval_epoch()
        self.last_eval_step = step
        avg = self.keep_avg_eval.avg_values
        mel, text = avg["avg_loss_mel_ce"], avg["avg_loss_text_ce"]
        self.save_best_model()
        seconds = time.perf_counter() - start
        self.hooks.on_eval(step, mel, text, self.optimizer[0].param_groups[0]["lr"], seconds)

    def save_best_model(self) -> None:
        """Keep this evaluation's model when its eval Mel CE is among the ``keep_best`` lowest so
        far, written slim and in the background; once on disk, the bests it pushed out go and
        ``best_model.pth`` links to the best (``_prune_bests``)."""
        eval_loss = self._pick_target_avg_loss(self.keep_avg_eval)
        avg = self.keep_avg_eval.avg_values
        mel, keep = avg.get("avg_loss_mel_ce"), self.setup.keep_best
        if eval_loss is None or not self._enters_kept(mel):
            return
        if keep > 1 and self.saves.writer.withdrawable("best"):
            self.finish_writes()  # the waiting best stays kept: written, never replaced
        start, step = time.perf_counter(), self.total_steps_done
        path = self.run_dir / f"best_model_{step}.pth"
        # a step replayed after a resume rewrites its file: its earlier entry goes
        others = [k for k in self.kept if k[2] != path]
        self.kept = sorted([*others, (mel, step, path)])[:keep]
        train_loss = self._pick_target_avg_loss(self.keep_avg_train) or math.inf
        if self.kept[0][2] == path:
            self.best_loss = {"train_loss": train_loss, "eval_loss": eval_loss}
        model = self._get_model()
        loss = {"train_loss": train_loss, "eval_loss": eval_loss}
        info = {"step": step, "model_loss": loss, **_info(model)}
        self.pending_best[path] = (step, mel, avg["avg_loss_text_ce"])
        weights = self.setup.slim(model.state_dict())
        prune = _prune_bests(self.run_dir, path, lambda: [k[2] for k in self.kept])
        replaced = self.saves.best(path, weights, info, prune)
        self.pending_best.pop(replaced, None)  # never written: nothing to report
        self.submit_seconds += time.perf_counter() - start

    def _enters_kept(self, mel: float | None) -> bool:
        """Whether an eval Mel CE belongs among the kept bests (a NaN never does)."""
        if mel is None or not math.isfinite(mel):
            return False
        return len(self.kept) < self.setup.keep_best or mel < self.kept[-1][0]

    def save_checkpoint(self) -> None:
        """coqui's periodic checkpoint (what its ``save_checkpoint`` writes, plus what the model
        says every checkpoint carries), in the background and atomically, then the oldest beyond
        ``save_n_checkpoints`` removed."""
        start = time.perf_counter()
        path, content = self._checkpoint(self.total_steps_done)
        self.saves.checkpoint(path, content, self._rotate, copy=self.use_cuda)
        self.submit_seconds += time.perf_counter() - start

    def _save_checkpoint_now(self, step: int) -> Path:
        """A checkpoint written before this returns (the run ends, or stops)."""
        path, content = self._checkpoint(step)
        self.saves.checkpoint(path, content, self._rotate, copy=False)
        self.finish_writes()
        return path

    def _checkpoint(self, step: int) -> tuple[Path, dict[str, Any]]:
        """The path and content of ``checkpoint_<step>.pth``, as ``trainer.io.save_model``
        builds it (live tensors: copy them before training goes on)."""
        model = self._get_model()
        content = {
            "config": self.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": [o.state_dict() for o in _as_list(self.optimizer)],
            "scheduler": [s.state_dict() for s in _as_list(self.scheduler) if s is not None],
            "scaler": self.scaler.state_dict() if self.use_amp_scaler else None,
            "step": step,
            "epoch": self.epochs_done,
            "date": datetime.date.today().strftime("%B %d, %Y"),
            "model_loss": {
                "train_loss": self._target_loss_so_far(self.keep_avg_train),
                "eval_loss": self._target_loss_so_far(self.keep_avg_eval),
            },
            **_info(model),
        }
        return self.run_dir / f"checkpoint_{step}.pth", content

    def _rotate(self) -> None:
        keep_n_checkpoints(str(self.output_path), self.config.save_n_checkpoints)

    def _report_written(self, paths: list[Path]) -> None:
        for path in paths:
            if path in self.pending_best:
                step, mel, text = self.pending_best.pop(path)
                self.hooks.on_best(step, mel, text, path)

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
        best = self.setup.best_eval_loss
        if self.continue_run and best is not None:
            self.best_loss = {"train_loss": math.inf, "eval_loss": best}

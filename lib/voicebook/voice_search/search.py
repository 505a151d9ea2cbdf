"""Voice search: fit both halves of a voice to the speaker without fine-tuning.

An XTTS voice is a ``gpt_cond_latent`` (what the GPT hears) and a ``speaker_embedding`` (what the
HiFi-GAN decoder hears). With the model frozen, the stage searches the latent by teacher-forced
Mel CE (``voicebook.coqui.latents``), then the embedding by the speaker similarity of decoded
audio (``voicebook.voice_search.speaker``), by an evolution strategy (evotorch) over ``MixSpace``
or by gradient descent over ``FullSpace``. Each half selects on the validation split, so that
the evaluation's test split stays unseen; each search is a named voice
(``voicebook.voices.store``). Why the halves are searched in this order and weighed so:
``docs/voice-search.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from voicebook.core import runs, stages
from voicebook.core.figures import Curve, curves_figure
from voicebook.core.fileio import archive_run, atomic_path, write_json_atomic
from voicebook.core.live import LiveChart
from voicebook.core.paths import experiment_dir
from voicebook.dataprep import splits
from voicebook.speaker import SpeakerSimilarity
from voicebook.voice_search.speaker import (
    EmbeddingSpace,
    SpeakerObjective,
    TorchSpeakerEncoder,
    minibatch_of,
    speaker_data,
)
from voicebook.voices import store as voices
from voicebook.voices.references import choose_reference_clips

ES_METHODS = ("cmaes", "snes", "xnes", "cem")
METHODS = (*ES_METHODS, "gradient")
HALVES = ("latent", "speaker")  # latent: loss = Mel CE; speaker: loss = 1 - speaker similarity
CURVE_COLUMNS = ["generation", "train_loss", "train_best_loss", "heldout_loss", "seconds"]
STAGE_CURVE_COLUMNS = ["half", *CURVE_COLUMNS]
# the files the stage writes, named by its contract (voicebook.core.stages)
VOICE_FILE, CURVES_FILE, SEARCH_FILE = voices.VOICE_FILE, voices.CURVES_FILE, voices.SEARCH_FILE
CEM_PARENTS = 0.5  # CEM's parenthood ratio: the best half of a population sets the next one


@dataclass
class SearchConfig:
    """The voice-search stage's settings; mirrors the parameters cell of 02b_voice_search."""

    experiment: str = "demo"
    outputs_dir: str = ""
    base_model: str = "tiny"
    dataset_dir: str = ""  # "" = outputs/<experiment>/dataset
    init_from: Any = "base"  # "base", "phase1", "phase2" (their best), a checkpoint / export,
    # or a list of them: one search each, in order, in one stage run (the demo's [base, phase2])
    method: str = "cmaes"  # cmaes | snes | xnes | cem | gradient
    population: int = 8  # candidates per generation (ES); ignored by gradient
    generations: int = 12  # of the latent half
    step_size: float = 0.3  # ES: initial stdev; gradient: Adam lr (both relative to the start)
    seed: int = 1
    minibatch: int = 4  # training clips per generation (latent half)
    patience: int = 5  # stop a half after this many generations without a validation gain
    reference_clips: Any = "first"  # the start voice's clips, as the evaluation chooses them
    n_reference_clips: int = 2  # as the evaluation's
    n_mix_clips: int = 8  # training clips whose latents (embeddings) MixSpace mixes
    bias_dims: int = 8  # random directions of MixSpace's bias
    max_eval_clips: int = 0  # validation clips scored; 0 = every one
    search_latent: bool = True  # the latent half (Mel CE); False keeps the reference latent
    search_speaker: bool = True  # the speaker half (similarity); False keeps the reference one
    speaker_generations: int = 4  # of the speaker half (each decodes audio: costlier)
    speaker_minibatch: int = 2  # training clips decoded per candidate and generation
    speaker_window_s: float = 1.0  # seconds decoded from the middle of each clip
    voice_name: str = ""  # "" = <init_from>-<method>
    language: str = "hu"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: pick one of {', '.join(METHODS)}.")
        if min(self.generations, self.speaker_generations, self.minibatch) < 1:
            raise ValueError("generations, speaker_generations and minibatch >= 1, please.")
        if self.population < 2 or self.speaker_minibatch < 1:
            raise ValueError("population >= 2 and speaker_minibatch >= 1, please.")
        if self.step_size <= 0 or self.speaker_window_s <= 0:
            raise ValueError(f"step_size={self.step_size}, speaker_window_s: must be positive.")
        if isinstance(self.init_from, list | tuple):
            if not self.init_from:
                raise ValueError("init_from=[]: name at least one model to search on.")
            if self.voice_name and len(self.init_from) > 1:
                raise ValueError(
                    f"voice_name={self.voice_name!r} with init_from={list(self.init_from)}: one "
                    "name cannot hold several voices; leave voice_name empty (<init_from>-<method>)."
                )

    def searches(self) -> list[SearchConfig]:
        """One config per model in ``init_from`` (a list), or this one: what ``run_search``
        takes."""
        if not isinstance(self.init_from, list | tuple):
            return [self]
        return [dataclasses.replace(self, init_from=one) for one in self.init_from]

    @property
    def name(self) -> str:
        """The voice's name: ``voice_name``, or ``<init_from>-<method>`` (the names joined with
        ", " for a list of models)."""
        if self.voice_name:
            return self.voice_name
        names = [voices.default_voice_name(one.init_from, self.method) for one in self.searches()]
        return ", ".join(names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- parametrisations ------------------------------------------------------------------------


class MixSpace:
    """latent(x) = start + sum_k x_k (z_k - mean z) + x_K (mean z - start)
    + scale * sum_j x_{K+1+j} v_j.

    ``z_k`` are per-clip latents; ``x_K`` pulls the start towards their mean (so a start far off,
    e.g. a corrupted one, can reach the clips' voice). Each bias direction ``v_j`` adds one vector
    to all 32 latent slots alike: on the GPT measured here almost all of the Mel CE's gradient
    with respect to the latent lies in that slot-shared subspace, so a few random orthonormal
    directions inside it reach far more of the objective than random directions in the full
    latent. ``scale`` is the start latent's norm: a bias coefficient of 0.1 moves the latent by
    10 %. x = 0 is the start.
    """

    def __init__(self, start: torch.Tensor, clip_latents: torch.Tensor, bias_dims: int, seed: int):
        self.start = start.reshape(1, *start.shape[-2:]).float()
        mean = clip_latents.float().mean(0, keepdim=True)
        self.offsets = torch.cat([clip_latents.float() - mean, mean - self.start])
        slots, width = self.start.shape[1:]
        bias_dims = min(max(bias_dims, 0), width)
        generator = torch.Generator().manual_seed(seed)
        shared = torch.linalg.qr(torch.randn(width, bias_dims, generator=generator)).Q.T
        # (j, slots, width), unit norm each: the same vector in every slot
        self.directions = shared[:, None, :].expand(-1, slots, -1) / slots**0.5
        self.scale = float(self.start.norm())
        self.dim = len(self.offsets) + bias_dims

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.offsets)
        mix = torch.einsum("pk,kad->pad", x[:, :k], self.offsets.to(x.device))
        bias = torch.einsum("pj,jad->pad", x[:, k:], self.directions.to(x.device))
        return self.start.to(x.device) + mix + self.scale * bias


class FullSpace:
    """latent(x) = start + rms(start) * x: every element free (prompt tuning)."""

    def __init__(self, start: torch.Tensor):
        self.start = start.reshape(1, *start.shape[-2:]).float()
        self.scale = float(self.start.pow(2).mean().sqrt())
        self.dim = self.start.numel()

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.start.to(x.device) + self.scale * x.view(len(x), *self.start.shape[1:])


# --- objectives ------------------------------------------------------------------------------


class Objective(Protocol):
    """What a search minimises: ``train`` on generation ``g``'s minibatch (differentiable),
    ``heldout`` on the held-out clips (one point)."""

    dim: int

    def train(self, x: torch.Tensor, generation: int) -> torch.Tensor: ...

    def heldout(self, x: torch.Tensor) -> float: ...


class MelObjective:
    """Mel CE of the frozen GPT for the latents a space makes of ``x``."""

    def __init__(self, space, latent_objective, train_clips, eval_clips, minibatch: int, seed: int):
        self.space, self.objective = space, latent_objective
        self.train_clips, self.eval_clips = train_clips, eval_clips
        self.minibatch, self.seed = minibatch, seed
        self.dim = space.dim

    def train(self, x: torch.Tensor, generation: int) -> torch.Tensor:
        pick = minibatch_of(len(self.train_clips), self.minibatch, self.seed, generation)
        clips = self.train_clips.select(pick)
        return self.objective.mel_ce(self.space.latents(x), clips).to(x.device)

    @torch.no_grad()
    def heldout(self, x: torch.Tensor) -> float:
        return float(self.objective.mel_ce(self.space.latents(x.reshape(1, -1)), self.eval_clips))


# --- the search loop -------------------------------------------------------------------------


@dataclass
class SearchOutcome:
    best_x: torch.Tensor
    start_heldout: float
    best_heldout: float
    best_generation: int
    generations_done: int
    stop_reason: str
    curves: pd.DataFrame


def _es_searcher(method: str, objective: Objective, population: int, step_size: float, seed: int):
    from evotorch import Problem
    from evotorch.algorithms import CEM, CMAES, SNES, XNES

    logging.getLogger("evotorch").setLevel(logging.WARNING)

    class LatentProblem(Problem):
        generation = 0

        def _evaluate_batch(self, solutions) -> None:
            with torch.no_grad():
                solutions.set_evals(objective.train(solutions.values, self.generation))

    problem = LatentProblem(
        "min", solution_length=objective.dim, initial_bounds=(-1, 1), dtype=torch.float32, seed=seed
    )
    centre = torch.zeros(objective.dim)
    common = {"stdev_init": step_size, "popsize": population, "center_init": centre}
    if method == "cmaes":
        searcher = CMAES(problem, **common)
    elif method == "snes":
        searcher = SNES(problem, **common)
    elif method == "xnes":
        searcher = XNES(problem, **common)
    else:
        searcher = CEM(problem, parenthood_ratio=CEM_PARENTS, **common)
    return problem, searcher


def search(
    objective: Objective,
    method: str,
    *,
    population: int = 8,
    generations: int = 12,
    step_size: float = 0.1,
    seed: int = 1,
    patience: int = 5,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
) -> SearchOutcome:
    """Minimise ``objective`` from x = 0 by ``method``; keep the best point by held-out score.

    Row 0 of the curves is the start. ES methods score the distribution's centre on the held-out
    clips after each generation; ``gradient`` scores its current point.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: pick one of {', '.join(METHODS)}.")
    torch.manual_seed(seed)
    x = torch.zeros(objective.dim)
    start = objective.heldout(x)
    best = (start, x.clone(), 0)
    rows = [dict(zip(CURVE_COLUMNS, [0, math.nan, math.nan, start, 0.0], strict=True))]
    if on_generation:
        on_generation(rows[0])
    step = _gradient_stepper(objective, x, step_size) if method == "gradient" else None
    if step is None:
        problem, searcher = _es_searcher(method, objective, population, step_size, seed)
    stop_reason, since_best = f"ran all {generations} generations", 0
    for generation in range(1, generations + 1):
        started = time.perf_counter()
        if step is not None:
            train_mean, train_best, x = step(generation)
        else:
            problem.generation = generation
            searcher.step()
            x = searcher.status["center"].clone().detach()
            train_mean = float(searcher.status["mean_eval"])
            train_best = float(searcher.status["pop_best_eval"])
        heldout = objective.heldout(x)
        row = [generation, train_mean, train_best, heldout, time.perf_counter() - started]
        rows.append(dict(zip(CURVE_COLUMNS, row, strict=True)))
        if on_generation:
            on_generation(rows[-1])
        if heldout < best[0]:
            best, since_best = (heldout, x.clone(), generation), 0
        else:
            since_best += 1
        if patience and since_best >= patience:
            stop_reason = f"validation loss not better for {patience} generations"
            break
    return SearchOutcome(
        best_x=best[1],
        start_heldout=start,
        best_heldout=best[0],
        best_generation=best[2],
        generations_done=len(rows) - 1,
        stop_reason=stop_reason,
        curves=pd.DataFrame(rows, columns=CURVE_COLUMNS),
    )


def _gradient_stepper(objective: Objective, x0: torch.Tensor, step_size: float):
    """One Adam step per generation on that generation's minibatch, the GPT frozen."""
    x = x0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=step_size)

    def step(generation: int) -> tuple[float, float, torch.Tensor]:
        optimizer.zero_grad()
        loss = objective.train(x.unsqueeze(0), generation)[0]
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        return value, value, x.detach().clone()

    return step


# --- the stage -------------------------------------------------------------------------------


def resolve_checkpoint(experiment_path: Path, init_from: str) -> Path | None:
    """None for the base; phase 1's / phase 2's best checkpoint; or a checkpoint file / export."""
    from voicebook.training.checkpoints import checkpoint_file
    from voicebook.training.checkpoints import resolve_checkpoint as phase_checkpoint

    spec = str(init_from).strip() or "base"
    what = f"init_from={spec!r}"
    if spec == "base":
        return None
    if spec in voices.PHASES:
        return phase_checkpoint(experiment_path, spec, "best", what)
    return checkpoint_file(spec, what)


@dataclass
class SearchResult:
    params: dict[str, Any]
    summary: dict[str, Any]  # the voice_search scrap
    curves: pd.DataFrame
    folder: Path

    def table(self) -> pd.DataFrame:
        shown = {k: v for k, v in self.summary.items() if k != "params"}
        return pd.DataFrame({"value": shown})


@dataclass
class Setup:
    """What both halves search with, made once per search."""

    model: Any
    base: Path
    checkpoint: Path | None
    references: list[Path]  # the start voice's clips (the evaluation's reference clips)
    start: tuple[torch.Tensor, torch.Tensor]  # (gpt_cond_latent, speaker_embedding)
    clips: dict[str, Any]  # "train" and "eval" (validation) ClipBatch
    mix: tuple[torch.Tensor, torch.Tensor]  # the mix clips' latents and embeddings
    scorer: SpeakerSimilarity | None  # resemblyzer, when the speaker half runs
    prepared_at: float  # perf_counter when loading was done
    mean_voices: dict = dataclasses.field(default_factory=dict)  # the splits' (speaker_data)


@dataclass
class Half:
    """One half's result: the kept value and its search (None: the half was turned off)."""

    value: torch.Tensor
    outcome: SearchOutcome | None = None
    space_dims: int = 0


def _archive(folder: Path) -> Path | None:
    """Move an earlier search's files to ``history/<n>/`` (nothing a run made is overwritten)."""
    present = [p for p in folder.iterdir() if p.name != "history"] if folder.is_dir() else []
    return archive_run(present, folder / "history")


def run_searches(
    params: SearchConfig, view: Callable[[SearchConfig], Any] | None = None
) -> list[SearchResult]:
    """The whole stage: one ``run_search`` per model of ``init_from``, in order. ``view(one)``
    makes each search's live view (``SearchView``); the last result is the stage's latest."""
    results, mean_voices = [], {}  # the real recordings': the same for every search
    for one in params.searches():
        shown = view(one) if view else None
        on_generation = shown.on_generation if shown else None
        results.append(run_search(one, on_generation=on_generation, mean_voices=mean_voices))
        if shown:
            shown.close(results[-1].curves)
    return results


def summary_table(results: list[SearchResult]) -> pd.DataFrame:
    """Every search's summary, one column per voice."""
    return pd.concat({r.summary["voice_name"]: r.table()["value"] for r in results}, axis=1)


def run_search(
    params: SearchConfig,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
    mean_voices: dict | None = None,
) -> SearchResult:
    """One search: load, search the halves, write the voice, publish it everywhere.
    ``mean_voices``: the splits' mean voices another search of the stage made (``speaker_data``)."""
    if len(params.searches()) > 1:
        raise ValueError(f"init_from={params.init_from}: several models, use run_searches.")
    params = params.searches()[0]
    started = time.perf_counter()
    exp = experiment_dir(params.experiment, params.outputs_dir)
    folder = voices.voice_folder(exp, params.name)
    done = _finished(folder, params)
    if done is not None:
        print(f"Voice {params.name!r} already searched with these parameters: {folder}.")
        return _published(exp, params, done)
    moved = _archive(folder)
    if moved:
        print(f"An earlier search of voice {params.name!r} moved to {moved}.")
    folder.mkdir(parents=True, exist_ok=True)
    setup = prepare(params, exp, folder)
    if mean_voices is not None:  # else its own (Setup's default)
        setup.mean_voices = mean_voices
    latent = latent_half(params, setup, _tagged(on_generation, "latent"))
    speaker = speaker_half(params, setup, latent.value, _tagged(on_generation, "speaker"))
    result = _write_results(params, folder, setup, latent, speaker, started)
    return _published(exp, params, result)


def _tagged(on_generation, half: str):
    """``on_generation`` given each row with its half."""
    return (lambda row: on_generation({"half": half, **row})) if on_generation else None


def prepare(params: SearchConfig, exp: Path, folder: Path) -> Setup:
    """Load the frozen model, the clips of both splits and the starting voice."""
    from voicebook.coqui import latents as coqui  # heavy (coqui-tts): only when a search runs
    from voicebook.coqui.base import resolve_base
    from voicebook.core.device import resolve_device

    base = resolve_base(params.base_model)
    dataset = Path(params.dataset_dir) if params.dataset_dir else exp / "dataset"
    checkpoint = resolve_checkpoint(exp, params.init_from)
    device = resolve_device(params.device)
    train, evals = coqui.clip_samples(base, dataset, folder / "_trainer", params.language)
    if not train or not evals:
        raise ValueError(f"The dataset in {dataset} has no usable train or eval clip: re-run data prep.")  # fmt: skip
    evals = evals[: params.max_eval_clips or None]
    model = coqui.load_frozen_xtts(base, checkpoint, device)
    scorer = SpeakerSimilarity.without_reference(device=device) if params.search_speaker else None
    references = start_clips(params, dataset, folder)
    start = coqui.reference_voice(model, references)
    coqui.save_voice(folder / "reference_voice.pth", "reference", *start)
    clips = {split: coqui.precompute_clips(model, base, samples, device)
             for split, samples in (("train", train), ("eval", evals))}  # fmt: skip
    mix = coqui.clip_latents(model, [s["audio_file"] for s in train[: params.n_mix_clips]])
    return Setup(
        model, base, checkpoint, references, start, clips, mix, scorer, time.perf_counter()
    )


def start_clips(params: SearchConfig, dataset: Path, folder: Path) -> list[Path]:
    """The evaluation's reference clips: its ``reference_clips`` rule on the split it scores
    (the test split's view; the validation split for a dataset made before there was one)."""
    view, _, _ = splits.scoring_dataset(dataset, folder / "_views")
    return choose_reference_clips(params.reference_clips, view, params.n_reference_clips)


def latent_half(params: SearchConfig, setup: Setup, on_generation=None) -> Half:
    """``gpt_cond_latent`` by validation Mel CE (the start latent when the half is off)."""
    from voicebook.coqui.latents import LatentObjective  # heavy (coqui-tts)

    start = setup.start[0]
    if not params.search_latent:
        return Half(start)
    if params.method == "gradient":
        space = FullSpace(start)
    else:
        space = MixSpace(start, setup.mix[0], params.bias_dims, params.seed)
    objective = MelObjective(space, LatentObjective(setup.model.gpt), setup.clips["train"],
                             setup.clips["eval"], params.minibatch, params.seed)  # fmt: skip
    outcome = search(
        objective, params.method, population=params.population, generations=params.generations,
        step_size=params.step_size, seed=params.seed, patience=params.patience,
        on_generation=on_generation,
    )  # fmt: skip
    return Half(space.latents(outcome.best_x.reshape(1, -1)), outcome, space.dim)


def speaker_half(params: SearchConfig, setup: Setup, latent: torch.Tensor, on_generation=None) -> Half:  # fmt: skip
    """``speaker_embedding`` by validation speaker similarity, the kept ``latent`` held (the
    start embedding when the half is off)."""
    from voicebook.coqui import latents as coqui  # heavy (coqui-tts)

    start = setup.start[1]
    if not params.search_speaker:
        return Half(start)
    data = speaker_data(setup.model, coqui, latent, setup.clips, params.speaker_window_s, setup.scorer, setup.mean_voices)  # fmt: skip
    rows = EmbeddingSpace.rows
    if params.method == "gradient":
        space = EmbeddingSpace(FullSpace(rows(start)))
    else:
        space = EmbeddingSpace(
            MixSpace(rows(start), rows(setup.mix[1]), params.bias_dims, params.seed)
        )
    decode = lambda latents, embeddings: coqui.decode(setup.model, latents, embeddings)
    objective = SpeakerObjective(space, decode, coqui.decoder_sample_rate(setup.model),
                                 TorchSpeakerEncoder(setup.scorer), data, params.speaker_minibatch,
                                 params.seed)  # fmt: skip
    outcome = search(
        objective, params.method, population=params.population,
        generations=params.speaker_generations, step_size=params.step_size, seed=params.seed,
        patience=params.patience, on_generation=on_generation,
    )  # fmt: skip
    return Half(space.latents(outcome.best_x.reshape(1, -1)), outcome, space.dim)


def _write_results(params, folder: Path, setup: Setup, latent: Half, speaker: Half, started: float) -> SearchResult:  # fmt: skip
    """The voice file, curves.csv and search.json of a finished search."""
    from voicebook.coqui.latents import save_voice  # heavy (coqui-tts)

    voice_file = save_voice(folder / VOICE_FILE, params.name, latent.value, speaker.value)
    curves = pd.concat(
        [o.curves.assign(half=h) for h, o in zip(HALVES, (latent.outcome, speaker.outcome)) if o],
        ignore_index=True,
    ).reindex(columns=STAGE_CURVE_COLUMNS)
    curves.to_csv(folder / CURVES_FILE, index=False)
    summary = {
        "voice_name": params.name,
        "method": params.method,
        "init_from": params.init_from,
        "checkpoint": str(setup.checkpoint or setup.base / "model.pth"),
        "split": splits.VALIDATION,  # what the search's numbers are on (selection)
        **_half_summary("latent", latent, "mel_ce"),
        **_half_summary("speaker", speaker, "speaker_similarity"),
        "minutes": (time.perf_counter() - started) / 60,
        "search_minutes": (time.perf_counter() - setup.prepared_at) / 60,
        "voice_file": str(voice_file),
        "reference_clips": [str(p) for p in setup.references],
        "n_train_clips": len(setup.clips["train"]),
        "n_eval_clips": len(setup.clips["eval"]),
        "params": params.to_dict(),
    }
    write_json_atomic(folder / SEARCH_FILE, {**summary, "state": "finished"})
    return SearchResult(params.to_dict(), summary, curves, folder)


def _half_summary(half: str, result: Half, measure: str) -> dict[str, Any]:
    """A half's figures on the validation split: the start's and the kept voice's ``measure``
    (Mel CE; similarity = 1 - the speaker half's loss), generations and time."""
    o = result.outcome
    to_measure = (lambda loss: loss) if half == "latent" else (lambda loss: 1 - loss)
    seconds = o.curves["seconds"].iloc[1:] if o else pd.Series(dtype=float)
    prefix = "" if half == "latent" else "speaker_"
    return {
        f"start_{measure}": to_measure(o.start_heldout) if o else math.nan,
        f"best_{measure}": to_measure(o.best_heldout) if o else math.nan,
        f"{prefix}best_generation": o.best_generation if o else 0,
        f"{prefix}generations": o.generations_done if o else 0,
        f"{prefix}stop_reason": o.stop_reason if o else f"the {half} half is turned off",
        f"{prefix}seconds_per_generation": float(seconds.mean()) if len(seconds) else math.nan,
        f"{prefix}search_dims": result.space_dims,
    }


def _published(exp: Path, params: SearchConfig, result: SearchResult) -> SearchResult:
    """Make the voice current everywhere: the stage's latest files, the export of the phase
    whose checkpoint it was searched on (also for a search already done: the export may be
    newer), and what the search rests on (``voicebook.core.runs``)."""

    for name in (VOICE_FILE, CURVES_FILE, SEARCH_FILE):
        _copy_atomic(result.folder / name, exp / voices.SEARCH_DIR / name)
    in_export = add_to_export(exp, result.summary)
    result.summary["export_voice_file"] = str(in_export or "")
    runs.read_input(SEARCH_STAGE, "dataset", Path(params.dataset_dir) if params.dataset_dir
                    else exp / "dataset", None if params.dataset_dir else stages.DATA_PREP.stem)  # fmt: skip
    _note_voices(exp, result.summary)
    return result


def _note_voices(exp: Path, summary: dict[str, Any]) -> None:
    """This run's voice, and every other current voice: they stay current beside it, so lineage
    judges each voice by its own checkpoint, not by which search ran last."""
    _note_voice(summary)
    for other in voices.current_voices(exp):
        if other.get("voice_name") not in ("", None, summary.get("voice_name")):
            _note_voice(other, f" of {other['voice_name']}")


def _note_voice(summary: dict[str, Any], suffix: str = "") -> None:
    """A voice (its search summary) as an output of this run, and the checkpoint it rests on as
    an input; ``suffix`` names another voice than the run's own."""
    source, checkpoint = summary.get("init_from"), summary.get("checkpoint")
    producer = source if source in voices.PHASES and checkpoint else None
    runs.read_input(SEARCH_STAGE, f"checkpoint{suffix}", checkpoint, producer)
    runs.wrote(SEARCH_STAGE, f"voice{suffix}", summary.get("voice_file"))


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as partial:
        shutil.copyfile(src, partial)


def add_to_export(exp: Path, summary: dict[str, Any]) -> Path | None:
    """A voice searched on the checkpoint a phase's export holds joins that export's
    ``speakers_xtts.pth`` under its name; returns that file (None: no such export)."""
    for stage in stages.TRAINING:
        export = exp / stage.short / "export"
        info = export / "export.json"
        held = json.loads(info.read_text()).get("checkpoint") if info.is_file() else None
        if voices.same_file(held, summary["checkpoint"]):
            return voices.add_to_export(export, [summary])
    return None


def _finished(folder: Path, params: SearchConfig) -> SearchResult | None:
    status_file = folder / SEARCH_FILE
    if not status_file.is_file():
        return None
    status = json.loads(status_file.read_text())
    same = status.get("params") == json.loads(json.dumps(params.to_dict()))
    if not same or status.get("state") != "finished" or not (folder / CURVES_FILE).is_file():
        return None
    summary = {k: v for k, v in status.items() if k != "state"}
    return SearchResult(params.to_dict(), summary, pd.read_csv(folder / CURVES_FILE), folder)


# --- live view -------------------------------------------------------------------------------

HALF_TITLES = {"latent": "latent half: Mel CE", "speaker": "speaker half: 1 - similarity"}


def search_figure(curves: pd.DataFrame, title: str = "Voice search"):
    """Each half's loss by generation: the training minibatch (population mean and best) and the
    validation clips, whose lowest point (the star) is what the half keeps."""
    if "half" not in curves:
        curves = curves.assign(half="latent")
    lines = []
    for panel, half in enumerate(HALVES):
        rows = curves[curves["half"] == half]
        later = rows[rows["generation"] > 0]
        lines += [Curve("train minibatch (mean)", later["generation"], later["train_loss"], panel),
                  Curve("train minibatch (best)", later["generation"], later["train_best_loss"],
                        panel, dash="dot"),
                  Curve("validation", rows["generation"], rows["heldout_loss"], panel,
                        mode="lines+markers")]  # fmt: skip
        if len(rows):
            best = rows.loc[rows["heldout_loss"].idxmin()]
            lines.append(Curve("kept (best)", [best["generation"]], [best["heldout_loss"]], panel,
                               mode="markers", marker={"size": 12, "symbol": "star"}))  # fmt: skip
    panels = [HALF_TITLES[h] for h in HALVES]
    return curves_figure(lines, panels, x_title="generation", title=title)


class SearchView(LiveChart):
    """The curves of the search, redrawn each generation, under a progress bar."""

    def __init__(self, params: SearchConfig):
        title = f"Voice search {params.name!r} ({params.method}, from {params.init_from})"
        total = params.generations * params.search_latent
        total += params.speaker_generations * params.search_speaker
        super().__init__(title, search_figure, STAGE_CURVE_COLUMNS, total, unit="gen")

    @classmethod
    def shown(cls, params: SearchConfig) -> SearchView:
        """A view of ``params``' search, on screen (``run_searches``' ``view``)."""
        view = cls(params)
        view.show()
        return view

    def on_generation(self, row: dict[str, Any]) -> None:
        started = row["generation"] > 0  # generation 0 is the starting voice
        self.add(row, started, True, **{row["half"]: f"{row['heldout_loss']:.4f}"})


# --- search against fine-tuning ---------------------------------------------------------------

VERSUS_COLUMNS = [
    "candidate", "label", "how", "voice", "split", "voice_mel_ce", "mel_ce",
    "speaker_similarity", "minutes", "stale",
]  # fmt: skip
current_voices = voices.current_voices  # every voice searched, by name (the report's rows)
SEARCH_STAGE = stages.VOICE_SEARCH.stem
PHASE_STAGES = {s.short: s.stem for s in stages.TRAINING}


def stage_minutes(experiment_path: str | Path) -> dict[str, float]:
    """Minutes each stage's latest run took, by stage: from its results record (from the
    kernel's start to its last publish, however it ran), else from papermill's duration in the
    runner's executed notebook."""
    from voicebook.core.scraps import read_records

    minutes = {}
    for stage, record in read_records(experiment_path).items():
        if record.get("started") and record.get("updated"):
            took = datetime.fromisoformat(record["updated"]) - datetime.fromisoformat(
                record["started"]
            )
            minutes[stage] = took.total_seconds() / 60
    for notebook in sorted((Path(experiment_path) / "notebooks").glob("*.ipynb")):
        meta = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
        duration = meta.get("papermill", {}).get("duration")
        if duration is not None and notebook.stem not in minutes:
            minutes[notebook.stem] = duration / 60
    return minutes


def versus_finetuning(
    eval_table: pd.DataFrame | None,
    searched: list[dict[str, Any]] | None,
    minutes: dict[str, float],
    stale: dict[str, str | None] | None = None,
) -> pd.DataFrame:
    """Training-free voice search against fine-tuning, one row per evaluated candidate.

    ``searched`` are the current voices (``current_voices``): the evaluation names each voice's
    candidate by the voice. ``voice_mel_ce`` is the held-out Mel CE given the one voice each
    candidate speaks with (what the latent half lowers), ``mel_ce`` the trainer-style one,
    ``speaker_similarity`` the synthesised sentences' (what the speaker half raises); all on the
    evaluation's split (``split``: test), while the searches selected on validation.
    ``minutes`` is what the candidate cost to make: phase 2 counts phase 1 too (it continues
    it), a searched voice its search plus the phases under it; NaN where a time was not
    recorded. ``stale``: why a candidate's numbers rest on a replaced run, by candidate (the
    report's lineage): such a row says so, and its minutes, which would be the latest runs',
    are left out (NaN).
    """
    stale = stale or {}
    if eval_table is None or eval_table.empty:
        return pd.DataFrame(columns=VERSUS_COLUMNS)
    by_candidate = {voices.voice_file_name(v["voice_name"]): v for v in searched or []}
    rows = []
    for row in eval_table.to_dict("records"):
        name = str(row["candidate"])
        voice = by_candidate.get(name)
        model = voice.get("init_from", "") if voice else name.removesuffix("-voice")
        phases = {"phase1": ["phase1"], "phase2": ["phase1", "phase2"]}.get(model, [])
        cost = sum(minutes.get(PHASE_STAGES[p], math.nan) for p in phases)
        is_voice = voice is not None or name.endswith("-voice")
        cost += (voice or {}).get("minutes", math.nan) if is_voice else 0.0
        how = " + ".join(["fine-tuning"] * bool(phases) + ["voice search"] * is_voice)
        rows.append({
            "candidate": name, "label": row.get("label", name), "how": how or "neither (base)",
            "voice": (voice or {}).get("voice_name", ""), "split": row.get("split", ""),
            **{k: row.get(k, math.nan) for k in ("voice_mel_ce", "mel_ce", "speaker_similarity")},
            "minutes": math.nan if stale.get(name) else cost, "stale": stale.get(name) or "",
        })  # fmt: skip
    return pd.DataFrame(rows, columns=VERSUS_COLUMNS)

"""Voice search: fit a voice's conditioning latents to the speaker without fine-tuning.

The frozen GPT's teacher-forced Mel CE on the training clips, given a voice latent, is the
objective (``voicebook.coqui.latents``). Two ways to search it:

- evolution strategies from evotorch (CMA-ES, SNES, XNES, CEM) over a low-dimensional
  parametrisation, ``MixSpace``: the reference clips' latent plus a weighted mix of the per-clip
  latents' deviations plus a bias along a few fixed random directions; every generation's whole
  population is scored on one minibatch of clips in batched forward passes;
- ``gradient``: plain gradient descent (Adam) on every element of the latent with the GPT frozen
  ("prompt tuning"), ``FullSpace``.

Both are easy to overcook: after each generation the search point (the distribution's centre, or
the current latent) is scored on the held-out clips; the best by held-out Mel CE is kept and the
search stops when it has not improved for ``patience`` generations.

Everything lands in ``outputs/<experiment>/voice_search/``: ``curves.csv`` (one row per
generation), ``speakers_xtts.pth`` (the voice, in XTTS's format), ``reference_voice.pth`` (the
starting voice) and ``search.json`` (parameters and results). A run with other parameters moves
the earlier files to ``history/<n>/`` first. Searched from phase 1's or phase 2's best
checkpoint, the voice is also added to that phase's ``export/speakers_xtts.pth`` when the export
holds that checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from voicebook.core import stages
from voicebook.core.live import LiveChart
from voicebook.core.paths import experiment_dir

ES_METHODS = ("cmaes", "snes", "xnes", "cem")
METHODS = (*ES_METHODS, "gradient")
INIT_FROM = ("base", "phase1", "phase2")  # or a checkpoint path / export folder
CURVE_COLUMNS = ["generation", "train_mel_ce", "train_best_mel_ce", "heldout_mel_ce", "seconds"]
# the files the stage writes, named by its contract (voicebook.core.stages)
VOICE_FILE, CURVES_FILE, SEARCH_FILE = (Path(f).name for f in stages.VOICE_SEARCH.files)
CEM_PARENTS = 0.5  # CEM's parenthood ratio: the best half of a population sets the next one


@dataclass
class SearchParams:
    """The voice-search stage's settings; mirrors the parameters cell of 02b_voice_search."""

    experiment: str = "demo"
    outputs_dir: str = ""
    base_model: str = "tiny"
    dataset_dir: str = ""  # "" = outputs/<experiment>/dataset
    init_from: str = "base"  # "base", "phase1", "phase2" (their best) or a checkpoint / export
    method: str = "cmaes"  # cmaes | snes | xnes | cem | gradient
    population: int = 8  # candidates per generation (ES); ignored by gradient
    generations: int = 12
    step_size: float = 0.3  # ES: initial stdev; gradient: Adam lr (both relative to the latent)
    seed: int = 1
    minibatch: int = 4  # training clips per generation
    patience: int = 5  # stop after this many generations without a held-out improvement
    n_reference_clips: int = 2  # the starting voice: the first held-out clips, as evaluation
    n_mix_clips: int = 8  # training clips whose latents MixSpace mixes
    bias_dims: int = 8  # random slot-shared directions of MixSpace's bias
    max_eval_clips: int = 0  # 0 = every held-out clip
    voice_name: str = "voicebook_searched"
    language: str = "hu"
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: pick one of {', '.join(METHODS)}.")
        if self.generations < 1 or self.population < 2 or self.minibatch < 1:
            raise ValueError("generations >= 1, population >= 2 and minibatch >= 1, please.")
        if self.step_size <= 0:
            raise ValueError(f"step_size={self.step_size}: it must be positive.")


def params_from(namespace: dict[str, Any]) -> SearchParams:
    """The stage's params from a notebook's variables (its parameters cell)."""
    from voicebook.core.config import from_params

    return from_params(SearchParams, namespace)


# --- parametrisations ------------------------------------------------------------------------


class MixSpace:
    """latent(x) = start + sum_k x_k (z_k - mean z) + scale * sum_j x_{K+j} v_j.

    ``z_k`` are per-clip latents. Each bias direction ``v_j`` adds one vector to all 32 latent
    slots alike: on the GPT measured here almost all of the Mel CE's gradient with respect to the
    latent lies in that slot-shared subspace, so a few random orthonormal directions inside it
    reach far more of the objective than random directions in the full latent. ``scale`` is the
    start latent's norm: a bias coefficient of 0.1 moves the latent by 10 %. x = 0 is the start.
    """

    def __init__(self, start: torch.Tensor, clip_latents: torch.Tensor, bias_dims: int, seed: int):
        self.start = start.reshape(1, *start.shape[-2:]).float()
        self.offsets = (clip_latents - clip_latents.mean(0, keepdim=True)).float()
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

    def minibatch_of(self, generation: int) -> list[int]:
        """Generation ``g``'s clips: a seeded draw, the same for every candidate of it."""
        n = len(self.train_clips)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + generation)
        return torch.randperm(n, generator=generator)[: min(self.minibatch, n)].tolist()

    def train(self, x: torch.Tensor, generation: int) -> torch.Tensor:
        clips = self.train_clips.select(self.minibatch_of(generation))
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
            stop_reason = f"held-out Mel CE not better for {patience} generations"
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
    if spec in ("phase1", "phase2"):
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


def _archive(folder: Path) -> Path | None:
    """Move an earlier search's files to ``history/<n>/`` (nothing a run made is overwritten)."""
    present = [p for p in folder.iterdir() if p.name != "history"] if folder.is_dir() else []
    if not present:
        return None
    history = folder / "history"
    n = 1 + max((int(p.name) for p in history.glob("*") if p.name.isdigit()), default=0)
    (history / str(n)).mkdir(parents=True)
    for item in present:
        item.replace(history / str(n) / item.name)
    return history / str(n)


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, default=str))
    partial.replace(path)


def run_search(
    params: SearchParams, on_generation: Callable[[dict[str, Any]], None] | None = None
) -> SearchResult:
    """The whole stage: load, precompute, search, write the voice file and results."""
    from voicebook.coqui import latents as coqui
    from voicebook.coqui.base import resolve_base
    from voicebook.core.device import resolve_device

    params.check()
    started = time.perf_counter()
    exp = experiment_dir(params.experiment, params.outputs_dir)
    folder = exp / "voice_search"
    done = _finished(folder, params)
    if done is not None:
        print(f"Voice search already done with these parameters: results from {folder}.")
        return _noted(exp, params, done)
    moved = _archive(folder)
    if moved:
        print(f"An earlier voice search's files moved to {moved}.")
    folder.mkdir(parents=True, exist_ok=True)

    base = resolve_base(params.base_model)
    dataset = Path(params.dataset_dir) if params.dataset_dir else exp / "dataset"
    checkpoint = resolve_checkpoint(exp, params.init_from)
    device = resolve_device(params.device)
    train_samples, eval_samples = coqui.clip_samples(base, dataset, folder / "_trainer")
    if not train_samples or not eval_samples:
        raise ValueError(
            f"The dataset in {dataset} has no usable train or eval clip: re-run data prep."
        )
    eval_samples = eval_samples[: params.max_eval_clips or None]
    model = coqui.load_frozen_xtts(base, checkpoint, device)
    references = [s["audio_file"] for s in eval_samples[: params.n_reference_clips]]
    start_latent, speaker = coqui.reference_voice(model, references)
    coqui.save_voice(folder / "reference_voice.pth", "reference", start_latent, speaker)
    train_clips = coqui.precompute_clips(model, base, train_samples, device)
    eval_clips = coqui.precompute_clips(model, base, eval_samples, device)
    if params.method == "gradient":
        space = FullSpace(start_latent)
    else:
        mix_paths = [s["audio_file"] for s in train_samples[: params.n_mix_clips]]
        space = MixSpace(
            start_latent, coqui.clip_latents(model, mix_paths)[0], params.bias_dims, params.seed
        )
    objective = MelObjective(
        space,
        coqui.LatentObjective(model.gpt),
        train_clips,
        eval_clips,
        params.minibatch,
        params.seed,
    )
    prepared = time.perf_counter()
    outcome = search(
        objective,
        params.method,
        population=params.population,
        generations=params.generations,
        step_size=params.step_size,
        seed=params.seed,
        patience=params.patience,
        on_generation=on_generation,
    )
    best_latent = space.latents(outcome.best_x.reshape(1, -1))
    voice_file = coqui.save_voice(folder / VOICE_FILE, params.voice_name, best_latent, speaker)
    in_export = _add_to_export(exp, params, checkpoint, best_latent, speaker)
    outcome.curves.to_csv(folder / CURVES_FILE, index=False)
    finished = time.perf_counter()
    searched = outcome.curves["seconds"].iloc[1:]
    summary = {
        "method": params.method,
        "init_from": params.init_from,
        "checkpoint": str(checkpoint or base / "model.pth"),
        "start_mel_ce": outcome.start_heldout,
        "best_mel_ce": outcome.best_heldout,
        "best_generation": outcome.best_generation,
        "generations": outcome.generations_done,
        "stop_reason": outcome.stop_reason,
        "minutes": (finished - started) / 60,
        "search_minutes": (finished - prepared) / 60,
        "seconds_per_generation": float(searched.mean()) if len(searched) else math.nan,
        "voice_file": str(voice_file),
        "voice_name": params.voice_name,
        "export_voice_file": str(in_export or ""),
        "reference_clips": references,
        "n_train_clips": len(train_clips),
        "n_eval_clips": len(eval_clips),
        "search_dims": space.dim,
        "params": params.to_dict(),
    }
    _write_json(folder / SEARCH_FILE, {**summary, "state": "finished"})
    return _noted(exp, params, SearchResult(params.to_dict(), summary, outcome.curves, folder))


def _noted(exp: Path, params: SearchParams, result: SearchResult) -> SearchResult:
    """Note what the search rests on (``voicebook.core.runs``): its dataset, the checkpoint it was
    searched with (made by the phase it names), and the voice it wrote."""
    from voicebook.core import runs

    stage = SEARCH_STAGE
    runs.read_input(stage, "dataset", Path(params.dataset_dir) if params.dataset_dir
                    else exp / "dataset", None if params.dataset_dir else "00_data_prep")  # fmt: skip
    producer = params.init_from if params.init_from in ("phase1", "phase2") else None
    checkpoint = result.summary.get("checkpoint")
    runs.read_input(stage, "checkpoint", checkpoint, producer if checkpoint else None)
    runs.wrote(stage, "voice", result.summary.get("voice_file"))
    return result


def _add_to_export(exp: Path, params: SearchParams, checkpoint, latent, speaker) -> Path | None:
    """Searched from a phase's checkpoint that its export holds: that export gets the voice too."""
    from voicebook.coqui.latents import add_voice

    if params.init_from not in ("phase1", "phase2"):
        return None
    export = exp / params.init_from / "export"
    info = export / "export.json"
    if not info.is_file() or json.loads(info.read_text()).get("checkpoint") != str(checkpoint):
        return None  # that export holds another checkpoint: the latent was fit to this one
    return add_voice(export / VOICE_FILE, params.voice_name, latent, speaker)


def _finished(folder: Path, params: SearchParams) -> SearchResult | None:
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


def curves_figure(curves: pd.DataFrame, title: str = "Voice search"):
    """Mel CE by generation: the minibatch (population mean and best) and the held-out clips."""
    import plotly.graph_objects as go

    fig = go.Figure()
    later = curves[curves["generation"] > 0]
    fig.add_scatter(
        x=later["generation"].tolist(),
        y=later["train_mel_ce"].tolist(),
        name="train minibatch (mean)",
        mode="lines",
    )
    fig.add_scatter(
        x=later["generation"].tolist(),
        y=later["train_best_mel_ce"].tolist(),
        name="train minibatch (best)",
        mode="lines",
        line={"dash": "dot"},
    )
    fig.add_scatter(
        x=curves["generation"].tolist(),
        y=curves["heldout_mel_ce"].tolist(),
        name="held-out",
        mode="lines+markers",
    )
    if len(curves):
        best = curves.loc[curves["heldout_mel_ce"].idxmin()]
        fig.add_scatter(
            x=[best["generation"]],
            y=[best["heldout_mel_ce"]],
            name="kept (best)",
            mode="markers",
            marker={"size": 12, "symbol": "star"},
        )
    fig.update_layout(title=title, xaxis_title="generation", yaxis_title="Mel CE", height=380)
    return fig


class SearchView(LiveChart):
    """The curve of the search, redrawn each generation, under a progress bar."""

    def __init__(self, params: SearchParams):
        title = f"Voice search ({params.method}, from {params.init_from})"
        super().__init__(title, curves_figure, CURVE_COLUMNS, params.generations, unit="gen")

    def on_generation(self, row: dict[str, Any]) -> None:
        started = row["generation"] > 0  # generation 0 is the starting voice
        self.add(row, started, True, heldout=f"{row['heldout_mel_ce']:.4f}")


# --- search against fine-tuning ---------------------------------------------------------------

VERSUS_COLUMNS = [
    "candidate", "label", "how", "voice_mel_ce", "mel_ce", "speaker_similarity", "minutes",
]  # fmt: skip
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
    search: dict[str, Any] | None,
    minutes: dict[str, float],
) -> pd.DataFrame:
    """Training-free voice search against fine-tuning, one row per evaluated candidate.

    ``voice_mel_ce`` is the held-out Mel CE given the one voice each candidate speaks with (the
    measure the search optimises), ``mel_ce`` the trainer-style one. ``minutes`` is what the
    candidate cost to make: phase 2 counts phase 1 too (it continues it), a searched voice its
    search plus the phases under it; NaN where a stage's time was not recorded.
    """
    if eval_table is None or eval_table.empty:
        return pd.DataFrame(columns=VERSUS_COLUMNS)
    search_minutes = (search or {}).get("minutes", math.nan)
    rows = []
    for row in eval_table.to_dict("records"):
        name = str(row["candidate"])
        searched = name.endswith("-voice")
        model = name.removesuffix("-voice")
        phases = {"phase1": ["phase1"], "phase2": ["phase1", "phase2"]}.get(model, [])
        cost = sum(minutes.get(PHASE_STAGES[p], math.nan) for p in phases)
        cost += search_minutes if searched else 0.0
        how = " + ".join(
            [*(["fine-tuning"] if phases else []), *(["voice search"] if searched else [])]
        )
        rows.append(
            {
                "candidate": name,
                "label": row.get("label", name),
                "how": how or "neither (base)",
                "voice_mel_ce": row.get("voice_mel_ce", math.nan),
                "mel_ce": row.get("mel_ce", math.nan),
                "speaker_similarity": row.get("speaker_similarity", math.nan),
                "minutes": cost,
            }
        )
    return pd.DataFrame(rows, columns=VERSUS_COLUMNS)

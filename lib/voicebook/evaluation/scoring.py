"""Evaluation stage: every candidate checkpoint measured on the same footing.

For each candidate (the base, phase 1's best, phase 2's best, any checkpoint) this module
computes eval Mel CE / Text CE on the dataset's held-out split with one piece of code (coqui's
``GPTTrainer.eval_step`` over the same batches), synthesises the same test sentences from the
same reference clips, and scores the audio: speaker similarity to the held-out clips
(resemblyzer), real-time factor, and the character error rate of a speech recogniser's
transcript (``voicebook.asr``, Whisper base offline by default).

A candidate may carry a voice file (``speakers_xtts.pth`` layout) instead of the reference clips:
every current voice of the voice search (``voicebook.voices.store``) is a candidate by
default, named by the voice, on the model it was searched with ("base + voice base-cmaes",
"phase 2 + voice phase2-gradient"). ``voice_mel_ce`` is, for every candidate, the held-out Mel
CE of its GPT given the one voice it speaks with (the reference clips' latent, or the voice
file's), the measure the voice search optimises; ``mel_ce`` conditions each clip on itself as
the trainer does, so a voice does not change it.

Every model here (the losses' GPTTrainer, synthesis, speaker similarity, ASR) runs on
``EvalConfig.device``: "auto" is the GPU when there is one.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from voicebook.coqui.limits import AUDIO_TOKENS_PER_CHAR
from voicebook.coqui.losses import CheckpointLosses, eval_losses
from voicebook.coqui.probes import SAMPLING_KEYS
from voicebook.core import stages
from voicebook.core.device import resolve_device
from voicebook.core.paths import EVAL_META, TRAIN_META
from voicebook.core.values import as_structure
from voicebook.evaluation import depth as eval_depth
from voicebook.evaluation import takes as eval_takes
from voicebook.evaluation.listening.session import REFERENCE
from voicebook.evaluation.measures import (
    BASE,
    SHORT_SENTENCE_WORDS,
    is_short,
    load_asr,
    real_time_factor,
)
from voicebook.measures.stats import BOOTSTRAP_SEED
from voicebook.measures.text import normalise_for_cer
from voicebook.speaker import SpeakerSimilarity
from voicebook.training.checkpoints import kept_checkpoints, resolve_checkpoint
from voicebook.voices.references import choose_reference_clips, eval_clips
from voicebook.voices.store import current_voices

PHASES = {"phase1": "phase 1 best", "phase2": "phase 2 best"}
KEPT = ":kept"  # "phase1:kept": every kept best model of phase 1, the pick among them
VOICE = "voice"  # every current voice of the voice search, each on its own checkpoint
VOICE_SEARCH = Path(stages.VOICE_SEARCH.files[2])  # voice_search/search.json
# what the stage writes, named by its contract: eval/eval_table.csv, eval/samples.csv, ratings.csv
EVAL_TABLE_FILE, SAMPLES_FILE, RATINGS_FILE, TAKES_FILE = (Path(f) for f in stages.EVALUATION.files)
DEFAULT_CANDIDATES = ("base", "phase1", "phase2")
EVAL_STAGE = stages.EVALUATION.stem
EVAL_TABLE_COLUMNS = [
    "candidate",
    "label",
    "checkpoint",
    "split",  # the held-out split scored: "test" ("validation" for a two-split dataset)
    "mel_ce",
    "text_ce",
    "speaker_similarity",
    "rtf",
    "cer",
    "n_sentences",
    "n_eval_batches",
    "voice_mel_ce",
    "general_text_ce",  # Text CE on the general test sentences (not the speaker's): forgetting
    "general_cer",  # CER on the same sentences' syntheses (the hidden clips' lines left out)
    "cap_hits",  # test sentences whose generation ran into the token cap (eval_depth)
    "short_cap_hit",  # whether the short test sentence did
    "dvae_mse",  # the base DVAE's held-out reconstruction MSE: the same for every candidate
    "mos",  # Distill-MOS (1-5), mean over the test sentences' takes
    "rate_error",  # |log(seconds per character / the speaker's)|: 0 is the speaker's tempo
    "runaway_per_100",  # failures per 100 takes, test sentences and stress set together
    "truncated_per_100",
    "skipped_or_repeated_per_100",
    "failure_per_100",  # takes with any of the three
    "n_takes",  # takes behind the numbers (sentences x takes_per_sentence)
    "takes_per_sentence",
]  # then per source: mel_ce[<source>], text_ce[<source>] (eval_depth.source_columns)
# Quiz-show and conversational lines that are not in the demo corpus's training text.
DEFAULT_TEST_SENTENCES = {
    "hu": [
        "Következő kérdés: melyik folyó szeli ketté Budapestet?",
        "Szerintem ma este mindenki nyerhet egy kicsit.",
        "Jó estét kívánok, kezdjük is a játékot!",
    ],
    "en": [
        "Next question: which river flows through the heart of London?",
        "Honestly, I think everyone can win a little tonight.",
        "Good evening, and welcome back to the show!",
    ],
}
# One short line per language: runaway generation on short text is a known XTTS failure, so a
# test sentence of at most SHORT_SENTENCE_WORDS words is always among the test sentences.
DEFAULT_SHORT_SENTENCES = {"hu": "Igen, pontosan.", "en": "Yes, exactly."}


@dataclass
class EvalConfig:
    """The evaluation stage's settings; mirrors the parameters cell of 03_evaluation."""

    experiment: str = "demo"
    outputs_dir: str = ""
    base_model: str = "tiny"
    candidates: list[Any] = field(default_factory=list)
    test_sentences: list[str] = field(default_factory=list)
    language: str = "hu"
    n_reference_clips: int = 2
    asr_model: str = "base"  # CER's speech recogniser (voicebook.asr); "" turns CER off
    seed: int = 1
    max_eval_batches: int = 0  # 0 = the whole eval split
    eval_batch_size: int = 3
    audio_tokens_per_char: float = AUDIO_TOKENS_PER_CHAR
    hidden_reference_sentences: int = 1  # held-out transcripts whose real clip hides in the test
    codebook_clips_per_source: int = 20  # 0: every clip; N: the first N clips of each source
    exclude_flagged_raters: bool = (
        True  # leave out sentences where a rater scored the real voice below a synthesis
    )
    device: str = "auto"  # "auto" (the GPU when there is one), "cpu" or "cuda": every model here
    short_test_sentence: str = ""  # added unless a test sentence is short; empty: per language
    reference_clips: Any = "first"  # "first" held-out clips, "auto" (nearest mean voice), files
    temperature: float = 0.65  # sampling (the seeds tune 0.55-0.75); the rest: coqui's defaults
    repetition_penalty: float = 10.0
    top_p: float = 0.85
    top_k: int = 50
    length_penalty: float = 1.0
    temperature_sweep: list[float] = field(default_factory=list)  # extra temperatures to try
    takes: int = 3  # takes of every sentence per candidate: the same seeds for every candidate
    stress_set: bool = True  # also speak the language's stress set (failure rates)
    stress_sentences: list[str] = field(default_factory=list)  # empty: the language's stress set
    mos: bool = True  # Distill-MOS per take (loaded once)
    bootstrap_seed: int = BOOTSTRAP_SEED  # the paired bootstrap's seed: same data, same interval

    def __post_init__(self) -> None:
        counts = {
            "n_reference_clips": self.n_reference_clips,
            "eval_batch_size": self.eval_batch_size,
            "takes": self.takes,
        }
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name}={value}: at least 1, please.")
        if min(self.max_eval_batches, self.codebook_clips_per_source) < 0:
            raise ValueError("max_eval_batches and codebook_clips_per_source: 0 (all) or more.")
        if self.hidden_reference_sentences < 0 or self.audio_tokens_per_char <= 0:
            raise ValueError(
                "hidden_reference_sentences must be 0 or more and audio_tokens_per_char positive."
            )
        temperatures = [self.temperature, *eval_depth.sweep_temperatures(self)]
        if not 0 < self.top_p <= 1 or min(temperatures) <= 0:
            raise ValueError("top_p in (0, 1] and every temperature above 0, please.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sentences(self) -> list[str]:
        given = list(self.test_sentences) or default_test_sentences(self.language)
        if any(is_short(s) for s in given):
            return given
        return [*given, self.short_test_sentence or default_short_sentence(self.language)]

    def sampling(self) -> dict[str, float]:
        """The sampling settings ``Xtts.inference`` takes."""
        return {key: getattr(self, key) for key in SAMPLING_KEYS}


@dataclass
class Candidate:
    """One model to evaluate. ``checkpoint`` None means the base's own ``model.pth``."""

    name: str  # file-system-safe: the folder under eval/ and the key in every table
    label: str
    checkpoint: Path | None = None
    voice: Path | None = None  # a voice file to speak with instead of the reference clips
    voice_name: str | None = None  # its voice (None: the file's only one)


def default_test_sentences(language: str) -> list[str]:
    if language not in DEFAULT_TEST_SENTENCES:
        raise ValueError(
            f"No default test sentences for language {language!r}: pass test_sentences=[...] "
            f"(defaults exist for {', '.join(DEFAULT_TEST_SENTENCES)})."
        )
    return list(DEFAULT_TEST_SENTENCES[language])


def default_short_sentence(language: str) -> str:
    if language not in DEFAULT_SHORT_SENTENCES:
        raise ValueError(
            f"No default short test sentence for language {language!r}: pass "
            f"short_test_sentence='...' (at most {SHORT_SENTENCE_WORDS} words)."
        )
    return DEFAULT_SHORT_SENTENCES[language]


def safe_name(text: str) -> str:
    """A folder name made of letters, digits, '.', '_' and '-' (accents dropped)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")
    return name or "candidate"


def find_dataset(experiment_path: Path) -> Path | None:
    """The data-prep stage's dataset folder, or None when it has not run."""
    folder = Path(experiment_path) / "dataset"
    ok = all((folder / meta).is_file() for meta in (TRAIN_META, EVAL_META))
    return folder if ok else None


def _phase_checkpoint(experiment_path: Path, phase: str) -> tuple[Path | None, str | None]:
    """A phase's best checkpoint, or a note saying why there is none (never an error)."""
    try:
        return resolve_checkpoint(experiment_path, phase, "best", phase), None
    except FileNotFoundError as exc:
        return None, f"{phase} skipped: {exc}"


def resolve_candidates(
    specs: Iterable[Any], experiment_path: Path
) -> tuple[list[Candidate], list[str]]:
    """Turn the ``candidates`` parameter into candidates and notes on the ones skipped.

    Each spec is "base", "phase1", "phase2", "phase1:kept" / "phase2:kept" (every kept best
    model of that phase, named by step), "voice" (every current voice of the voice search,
    each on the checkpoint it was searched on), a voice's name, a checkpoint path, or a dict
    ``{"label": ..., "checkpoint": <one of those>, "voice": <a voice file>}``; an empty list
    means the default three plus every current voice. Candidates that do not exist yet are
    skipped with a note, never an error.
    """
    specs = as_structure(specs)  # papermill -p passes text
    specs = [specs] if isinstance(specs, (str, dict)) else list(specs)  # "-p candidates phase1"
    searched = {safe_name(v["voice_name"]): v for v in current_voices(experiment_path)}
    found: list[Candidate] = []
    notes: list[str] = []
    for spec in specs or [*DEFAULT_CANDIDATES, *([VOICE] if searched else [])]:
        named = isinstance(spec, str) and spec not in (BASE, *PHASES) and safe_name(spec) in searched  # fmt: skip
        if spec == VOICE or named:
            chosen = searched.values() if spec == VOICE else [searched[safe_name(spec)]]
            voiced = [voice_candidate(experiment_path, v) for v in chosen]
            found += [c for c, _ in voiced if c]
            notes += [n for _, n in voiced if n]
            if not searched:
                notes.append(f"voice skipped: no finished voice search ({VOICE_SEARCH.parent}).")
            continue
        if isinstance(spec, str) and spec.endswith(KEPT) and spec.removesuffix(KEPT) in PHASES:
            kept = kept_candidates(experiment_path, spec.removesuffix(KEPT))
            found += kept
            notes += [] if kept else [f"{spec} skipped: that phase kept no best models yet."]
            continue
        candidate, note = _checkpoint_candidate(spec, experiment_path)
        found += [candidate] if candidate else []
        notes += [note] if note else []
    return _unique_names(found), notes


def kept_candidates(experiment_path: Path, phase: str) -> list[Candidate]:
    """Every kept best model of ``phase`` (``"phase1:kept"``), named by its step."""
    return [
        Candidate(
            f"{phase}-step{k['step']}",
            f"{phase.replace('phase', 'phase ')} kept step {k['step']}"
            f"{' (picked)' if k['picked'] else ''}",
            Path(k["checkpoint"]),
        )
        for k in kept_checkpoints(experiment_path, phase)
    ]


def _checkpoint_candidate(spec: Any, experiment_path: Path) -> tuple[Candidate | None, str | None]:
    """A "base" / "phase1" / "phase2" / checkpoint-path spec (or its dict form, which may give
    a voice file to speak with) as a candidate, or a note saying why not."""
    if isinstance(spec, dict) and "checkpoint" not in spec:
        raise ValueError(
            f"Candidate {spec!r} has no 'checkpoint': use "
            "{'label': ..., 'checkpoint': 'base' | 'phase1' | 'phase2' | <path>}."
        )
    what, label = (str(spec["checkpoint"]), spec.get("label")) if isinstance(spec, dict) else (str(spec), None)  # fmt: skip
    voice = spec.get("voice") if isinstance(spec, dict) else None
    if voice and not Path(voice).expanduser().is_file():
        return None, f"{spec} skipped: no voice file {voice}."
    if what == BASE:
        candidate = Candidate(BASE, label or "base model (no fine-tune)")
    elif what in PHASES:
        checkpoint, note = _phase_checkpoint(experiment_path, what)
        if note:
            return None, note
        candidate = Candidate(what, label or PHASES[what], checkpoint)
    else:
        checkpoint = Path(what).expanduser()
        checkpoint = checkpoint / "model.pth" if checkpoint.is_dir() else checkpoint  # an export
        if not checkpoint.is_file():
            return None, f"{what} skipped: no such checkpoint file."
        candidate = Candidate(safe_name(label or Path(what).stem), label or what, checkpoint)
    _give_voice(candidate, voice, label)
    return candidate, None


def _give_voice(candidate: Candidate, voice: str | None, label: str | None) -> None:
    if voice:
        candidate.voice = Path(voice).expanduser()
        candidate.name = f"{candidate.name}-voice"
        candidate.label = label or f"{candidate.label} + voice {candidate.voice.parent.name}"


def voice_candidate(experiment_path: Path, s: dict[str, Any]) -> tuple[Candidate | None, str | None]:  # fmt: skip
    """A searched voice (its ``search.json`` summary) on the model it was searched on, named
    by the voice, or a note saying why not."""
    name, init_from = s["voice_name"], s.get("init_from", BASE)
    checkpoint = None if init_from == BASE else s.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        return None, f"voice {name} skipped: its model {checkpoint} is gone."
    model = init_from if init_from in (BASE, *PHASES) else Path(init_from).stem
    halves = [h for h in ("latent", "speaker") if s.get("params", {}).get(f"search_{h}", True)]
    label = f"{model.replace('phase', 'phase ')} + voice {name} ({s.get('method')}: {' + '.join(halves)})"  # fmt: skip
    path = Path(checkpoint) if checkpoint else None
    return Candidate(safe_name(name), label, path, Path(s["voice_file"]), name), None


def _unique_names(candidates: list[Candidate]) -> list[Candidate]:
    seen: dict[str, int] = {}
    for c in candidates:
        seen[c.name] = seen.get(c.name, 0) + 1
        if seen[c.name] > 1:
            c.name = f"{c.name}-{seen[c.name]}"
    return candidates


# --- synthesis -----------------------------------------------------------------------------


def hidden_references(
    dataset_dir: Path, n: int, n_reference_clips: int, exclude: list[Path] | None = None
) -> pd.DataFrame:
    """The last ``n`` held-out clips that are not voice references (the first
    ``n_reference_clips``, or ``exclude``): their transcripts become test sentences and their
    recordings the hidden ``reference`` samples of the listening test (columns text, wav)."""
    meta = pd.read_csv(Path(dataset_dir) / EVAL_META, sep="|")
    spare = meta.iloc[max(n_reference_clips, 1) :]
    if exclude is not None:
        taken = {Path(p).resolve() for p in exclude}
        spare = meta[[(Path(dataset_dir) / f).resolve() not in taken for f in meta.audio_file]]
    spare = spare.tail(max(n, 0))
    return pd.DataFrame(
        {"text": spare["text"], "wav": [Path(dataset_dir) / p for p in spare["audio_file"]]}
    ).reset_index(drop=True)


def _reference_samples(hidden: pd.DataFrame, first_id: int, eval_dir: Path) -> pd.DataFrame:
    """Copies of the hidden real clips under ``eval/reference/`` as sample rows."""
    import shutil

    import soundfile as sf

    folder = eval_dir / REFERENCE
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(hidden.itertuples(), start=first_id):
        wav = Path(shutil.copy(r.wav, folder / f"s{i:02d}.wav"))
        rows.append({"candidate": REFERENCE, "sentence_id": f"s{i:02d}", "text": r.text,
                     "wav": str(wav), "audio_s": sf.info(str(wav)).duration})  # fmt: skip
    return pd.DataFrame(rows)


# --- speaker similarity and CER ------------------------------------------------------------


def _seen_in_training(sentences: list[str], dataset: Path) -> list[str]:
    train = pd.read_csv(dataset / TRAIN_META, sep="|")["text"].map(normalise_for_cer)
    seen = set(train)
    return [
        f"Test sentence {s!r} is in the training text: it measures memory, not generalisation."
        for s in sentences
        if normalise_for_cer(s) in seen
    ]


# --- the whole stage -----------------------------------------------------------------------


@dataclass
class EvalResult:
    table: pd.DataFrame
    samples: pd.DataFrame  # one row per synthesised clip: candidate, sentence_id, text, wav, ...
    notes: list[str]
    per_source: pd.DataFrame = field(default_factory=pd.DataFrame)  # candidate, source, losses
    temperature_sweep: pd.DataFrame = field(default_factory=pd.DataFrame)
    dvae_reconstruction: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # sampling, reference clips, cap
    takes: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per take, measured
    clip_losses: pd.DataFrame = field(default_factory=pd.DataFrame)  # candidate x held-out clip

    def scraps(self) -> dict[str, Any]:
        """What the stage publishes from its objective metrics (``voicebook.core.stages``)."""
        return {
            "eval_takes": self.takes,
            "eval_clip_losses": self.clip_losses,
            "eval_table": self.table,
            "eval_notes": self.notes,
            "eval_per_source": self.per_source,
            "eval_settings": self.settings,
            "temperature_sweep": self.temperature_sweep,
            "dvae_reconstruction": self.dvae_reconstruction,
        }


def evaluate(
    config: EvalConfig,
    experiment_path: Path,
    base_dir: Path,
    transcribe: Callable[[Path], str] | None = None,
) -> EvalResult:
    """Run the objective evaluation of every candidate; write ``eval/`` and return the table.

    Without a dataset, the table lists the candidates with empty metrics and the notes say why.
    """
    experiment_path = Path(experiment_path)
    eval_dir = experiment_path / "eval"
    candidates, notes = resolve_candidates(config.candidates, experiment_path)
    dataset, split = _scored_split(experiment_path, eval_dir, candidates, notes)
    sentences = config.sentences()  # fails early for a language without defaults
    device = resolve_device(config.device)
    config, prepared = _prepare(config, dataset, eval_dir, base_dir, transcribe, notes, device)
    rows, samples = [], []
    depth = {"losses": {}, "per_source": {}, "clips": {}, "sweep": [], "general_ce": {},
             "general": prepared["general"], "takes": [],
             "general_sentences": sentences if prepared["general"] else []}  # fmt: skip
    for c in tqdm(candidates, desc="candidates"):
        mse = prepared["recon"].get(eval_depth.ALL, {}).get("mse", math.nan)
        row = _empty_row(c, split, mse)
        if dataset is not None:
            row |= _evaluate_one(c, config, dataset, eval_dir, base_dir, prepared["judge"],
                                 prepared["references"], depth, device)  # fmt: skip
            samples.append(row.pop("_samples"))
        rows.append(row)
    table, hidden = _eval_table(rows), prepared["hidden"]
    if samples and not hidden.empty:
        real = _reference_samples(hidden, len(sentences) + 1, eval_dir)
        real["speaker_similarity"] = prepared["judge"].similarity.score(real["wav"])
        samples.append(real)
    sample_table = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    takes, clips = _gathered_takes(depth, candidates)
    if dataset is not None:
        _write_tables(experiment_path, eval_dir, table, sample_table, takes)
    settings = _settings(config, prepared, dataset, split)
    return EvalResult(
        table, sample_table, notes, *eval_depth.gathered(depth, candidates), prepared["recon"],
        settings, takes, clips,
    )  # fmt: skip


def _prepare(
    config: EvalConfig, dataset: Path | None, eval_dir: Path, base_dir: Path, transcribe,
    notes: list[str], device,
) -> tuple[EvalConfig, dict[str, Any]]:  # fmt: skip
    """What every candidate is scored with, loaded once: the voice's reference clips (train),
    the hidden real clips, the DVAE's reconstruction, the general sentences' view, and the
    per-take judge (speaker encoder, recogniser, Distill-MOS)."""
    from voicebook.dataprep import splits

    prepared = {"hidden": pd.DataFrame(columns=["text", "wav"]), "references": [], "recon": {},
                "general": None, "judge": None}  # fmt: skip
    if dataset is None:
        notes.append(
            f"No dataset in {eval_dir.parent / 'dataset'}: run 00_data_prep first. Without it "
            "there is no held-out split, no reference voice and nothing to synthesise."
        )
        return config, prepared
    sentences = config.sentences()
    scorer = SpeakerSimilarity(eval_clips(dataset), device=device)
    notes += _seen_in_training(sentences, dataset)
    config, references, hidden = _voice_and_sentences(config, dataset, scorer)
    prepared |= {"references": references, "hidden": hidden,
                 "recon": eval_depth.dvae_reconstruction(base_dir, dataset, device)}  # fmt: skip
    if references:  # the forgetting measure's sentences, read in the speaker's voice
        prepared["general"] = splits.general_view(
            eval_dir / splits.GENERAL_DIR, sentences, references
        )
    if transcribe is None:  # the config's recogniser; None when asr_model is ""
        transcribe = load_asr(config.asr_model, config.language, device)
    if transcribe is None:
        notes.append("CER skipped: asr_model is empty (give 'base', which works offline).")
    prepared["judge"] = eval_takes.take_scorer(config, dataset, scorer, transcribe, device)
    return config, prepared


def _settings(config: EvalConfig, prepared: dict[str, Any], dataset, split: str) -> dict:
    """The ``eval_settings`` scrap: what the synthesis ran with, the takes and the stress set."""
    if dataset is None:
        return {}
    judge = prepared["judge"]
    return eval_depth.settings(config, prepared["references"], dataset) | {
        "split": split,
        "takes": config.takes,
        "stress_sentences": eval_takes.stress_sentences(config),
        "bootstrap_seed": config.bootstrap_seed,
        "speaker_seconds_per_char": judge.rate,
        "mos": "Distill-MOS" if judge.mos is not None else "",
    }


def _gathered_takes(depth: dict[str, Any], candidates: list[Candidate]):
    """Every candidate's takes in one table, and every candidate's per-clip losses (a voice's
    are its checkpoint's: a voice does not change them)."""
    takes = pd.concat(depth["takes"], ignore_index=True) if depth["takes"] else pd.DataFrame()
    clips = [
        depth["clips"][key].assign(candidate=c.name)
        for c in candidates
        if (key := str(c.checkpoint or "")) in depth["clips"]
    ]
    columns = ["candidate", "audio_file", "source", *eval_depth.LOSSES]
    clips = pd.concat(clips, ignore_index=True)[columns] if clips else pd.DataFrame(columns=columns)
    return takes, clips


def _empty_row(c: Candidate, split: str, dvae_mse: float) -> dict[str, Any]:
    """A candidate's row before (or without) scoring: every metric NaN, no sentence."""
    row = {"candidate": c.name, "label": c.label, "checkpoint": str(c.checkpoint or "")}
    metrics = ("mel_ce", "text_ce", "speaker_similarity", "rtf", "cer", "voice_mel_ce",
               "general_text_ce", "general_cer", "mos", "rate_error", "runaway_per_100",
               "truncated_per_100", "skipped_or_repeated_per_100", "failure_per_100")  # fmt: skip
    row |= {"split": split, **{k: math.nan for k in metrics}}
    return row | {"n_sentences": 0, "n_eval_batches": 0, "cap_hits": 0, "short_cap_hit": None,
                  "dvae_mse": dvae_mse, "n_takes": 0, "takes_per_sentence": 0}  # fmt: skip


def _write_tables(experiment_path: Path, eval_dir: Path, table, sample_table, takes) -> None:
    """``eval_table.csv``, ``samples.csv`` and ``takes.csv`` (wav paths relative to
    ``eval/``)."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(experiment_path / EVAL_TABLE_FILE, index=False)
    for frame, file in ((sample_table, SAMPLES_FILE), (takes, TAKES_FILE)):
        relative = [str(Path(w).relative_to(eval_dir)) for w in frame["wav"]]
        frame.assign(wav=relative).to_csv(experiment_path / file, index=False)


def _scored_split(
    experiment_path: Path, eval_dir: Path, candidates: list[Candidate], notes: list[str]
) -> tuple[Path | None, str]:
    """The dataset folder to score (the test split's view: ``voicebook.dataprep.splits``) and the
    split's name; notes what the evaluation rests on (``voicebook.core.runs``)."""
    from voicebook.core import runs
    from voicebook.dataprep import splits

    dataset = find_dataset(experiment_path)
    runs.read_input(EVAL_STAGE, "dataset", dataset, stages.DATA_PREP.stem)
    for c in candidates:
        runs.read_input(EVAL_STAGE, f"candidate {c.name}", c.checkpoint,
                        _producer(experiment_path, c.checkpoint))  # fmt: skip
        runs.read_input(EVAL_STAGE, f"voice {c.name}", c.voice,
                        _producer(experiment_path, c.voice))  # fmt: skip
    if dataset is None:
        return None, ""
    scored, split, note = splits.scoring_dataset(dataset, eval_dir)
    notes += [note] if note else []
    return scored, split


def _producer(experiment_path: Path, path: Path | None) -> str | None:
    """The stage of this experiment whose folder holds ``path`` (None: none of them)."""
    if path is None:
        return None
    for stage in stages.STAGES:
        if Path(path).resolve().is_relative_to((experiment_path / stage.short).resolve()):
            return stage.stem
    return None


def _voice_and_sentences(
    config: EvalConfig, dataset: Path, scorer: SpeakerSimilarity
) -> tuple[EvalConfig, list[Path], pd.DataFrame]:
    """The reference clips, the hidden real clips (others), and the config whose test sentences
    end with the hidden clips' transcripts."""
    references = choose_reference_clips(
        config.reference_clips, dataset, config.n_reference_clips, scorer
    )
    hidden = hidden_references(
        dataset, config.hidden_reference_sentences, config.n_reference_clips, references
    )
    test_sentences = config.sentences() + hidden["text"].tolist()
    return dataclasses.replace(config, test_sentences=test_sentences), references, hidden


def _eval_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The eval table: its fixed columns, then the per-source ones in name order."""
    extra = sorted({k for r in rows for k in r} - set(EVAL_TABLE_COLUMNS))
    return pd.DataFrame(rows, columns=[*EVAL_TABLE_COLUMNS, *extra])


def _evaluate_one(
    c: Candidate,
    config: EvalConfig,
    dataset: Path,
    eval_dir: Path,
    base_dir: Path,
    judge: Any,
    references: list[Path],
    depth: dict[str, Any],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """One candidate's row: its checkpoint's losses, then its takes (``evaluation.takes``)
    measured by ``judge`` (a ``measures.scoring.TakeScorer``)."""
    from voicebook.coqui.latents import heldout_clips, heldout_mel_ce, load_voice, reference_voice
    from voicebook.coqui.models import XttsLoader

    losses, per_source, general_ce = _checkpoint_losses(
        c, config, dataset, eval_dir, base_dir, depth, device
    )
    # one Xtts for every candidate, each checkpoint's weights read into it in turn
    model = depth.setdefault("xtts", XttsLoader(base_dir, device)).load(c.checkpoint)
    voice = load_voice(c.voice, c.voice_name) if c.voice else reference_voice(model, references)
    if "heldout_clips" not in depth:  # the same tokens and DVAE codes for every candidate
        depth["heldout_clips"] = heldout_clips(model, base_dir, dataset, eval_dir / "_trainer",
                                               config.language)  # fmt: skip
    clips = depth["heldout_clips"]
    spoken = eval_takes.speak(model, c.name, config, voice, eval_dir / c.name, judge)
    depth["takes"].append(spoken)
    samples, test = eval_takes.first_takes(spoken), spoken[spoken["set"] == "test"]
    depth["sweep"].append(eval_depth.temperature_sweep(
        model, c.name, config, voice, eval_dir / c.name, judge.similarity, judge.transcribe))  # fmt: skip
    short = next(s for s in config.sentences() if is_short(s))
    return {
        "mel_ce": losses["mel_ce"],
        "text_ce": losses["text_ce"],
        "n_eval_batches": losses["n_batches"],
        **eval_takes.summary(spoken),
        "rtf": real_time_factor(test),
        "n_sentences": len(samples),
        "voice_mel_ce": heldout_mel_ce(
            model, base_dir, dataset, voice[0], eval_dir / "_trainer", config.language, clips
        ),
        "general_text_ce": general_ce,
        "general_cer": _general_cer(test, depth["general_sentences"]),
        **eval_depth.cap_hits(samples, short),
        **eval_depth.source_columns(per_source),
        "_samples": samples,
    }


def _checkpoint_losses(
    c: Candidate,
    config: EvalConfig,
    dataset: Path,
    eval_dir: Path,
    base_dir: Path,
    depth: dict[str, Any],
    device,
) -> tuple[dict[str, float], Any, float]:
    """Mel CE / Text CE, per source, and general Text CE of ``c``'s checkpoint: computed once
    per checkpoint (a voice does not change them) and kept in ``depth``."""
    key = str(c.checkpoint or "")
    if key not in depth["losses"]:  # one GPTTrainer for the three passes (CheckpointLosses)
        shared = CheckpointLosses(base_dir, c.checkpoint, eval_dir / "_trainer",
                                  language=config.language, seed=config.seed, device=device)  # fmt: skip
        depth["losses"][key] = shared.means(
            dataset, config.eval_batch_size, config.max_eval_batches
        )
        clips = eval_depth.clip_table(
            base_dir, dataset, c.checkpoint, eval_dir / "_trainer", config, device, losses=shared
        )
        depth["clips"][key], depth["per_source"][key] = clips, eval_depth.by_source(clips)
        depth["general_ce"][key] = general_text_ce(
            c, config, depth["general"], eval_dir, base_dir, device, losses=shared
        )
    return depth["losses"][key], depth["per_source"][key], depth["general_ce"][key]


def general_text_ce(
    c: Candidate, config: EvalConfig, general: Path | None, eval_dir: Path, base_dir: Path, device,
    *, losses: CheckpointLosses | None = None,
) -> float:  # fmt: skip
    """The candidate's Text CE on the general test sentences (``splits.general_view``): against
    the base's, how much of reading the fine-tune forgot. NaN without reference clips.
    ``losses``: the checkpoint's ``CheckpointLosses`` when already built."""
    if general is None:
        return math.nan
    if losses is not None:
        return losses.means(general, config.eval_batch_size)["text_ce"]
    return eval_losses(
        base_dir, general, c.checkpoint, eval_dir / "_trainer", language=config.language,
        seed=config.seed, batch_size=config.eval_batch_size, device=device,
    )["text_ce"]  # fmt: skip


def _general_cer(samples: pd.DataFrame, sentences: list[str]) -> float:
    """Mean CER over the general sentences' syntheses (not the hidden clips' transcripts)."""
    if not sentences or "cer" not in samples or samples["cer"].isna().all():
        return math.nan
    return float(samples.loc[samples["text"].isin(sentences), "cer"].mean())


def metrics_figure(table: pd.DataFrame):
    """Bars per candidate: eval Mel CE, Text CE and speaker similarity (plotly)."""
    from plotly.subplots import make_subplots

    metrics = [  # two lines each: side by side at 1280 px, one-line titles ran together
        ("mel_ce", "eval Mel CE<br>(lower is better)"),
        ("text_ce", "eval Text CE<br>(lower is better)"),
        ("speaker_similarity", "speaker similarity<br>(higher is better)"),
    ]
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=[title for _, title in metrics], horizontal_spacing=0.1
    )
    for col, (metric, _) in enumerate(metrics, start=1):
        fig.add_bar(x=table["label"], y=table[metric], name=metric, row=1, col=col)
    return fig.update_layout(showlegend=False, height=380, margin={"t": 80, "b": 40})

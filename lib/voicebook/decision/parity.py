"""Export parity: an export speaks exactly like the model the evaluation scored.

The evaluation loads checkpoints through voicebook's own loader; a user loads the export with
coqui alone (``voicebook.coqui.user_load``). For every evaluated candidate that has an export
(a phase's ``export/`` holding the checkpoint it scored, with the voice it spoke in), a fresh
process copies the export to another folder, loads the copy each way a user does (coqui's
``Xtts`` with ``strict=True``, and ``TTS.api``; once per export, which a phase's best and its
searched voices share), takes the voice as a user does (the reference
clips, or the searched voice's name in ``speakers_xtts.pth``) and speaks the first
``PARITY_SENTENCES`` test sentences with the evaluation's seed, sampling settings and token cap
(``voicebook.measures.takes``, as the evaluation's first take). Each take must equal the evaluation's within
``TOLERANCE`` (the largest absolute sample difference). A candidate whose export differs, or
does not load, is never recommended (``voicebook.decision.matrix``). A candidate is checked on
the checkpoint the evaluation scored: when its phase has re-run since, its export is of another
checkpoint, so there is nothing to compare (the report says the evidence is stale).

Verdicts are kept in ``<experiment>/export_parity.json`` by what they rest on (the export's and
the takes' content, the job, the coqui-tts and torch versions): a decision re-run with nothing
changed reuses them instead of loading every export again. A failed check is always re-run.

``python -m voicebook.decision.parity <jobs.json>`` is the fresh process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voicebook.core.runs import now
from voicebook.core.stages import DECISION

PARITY_SENTENCES = 2
TOLERANCE = 1e-4  # largest absolute sample difference (audio in [-1, 1]) that counts as equal
IDENTICAL = "identical"
SAMPLES_FILE = "eval/samples.csv"  # the evaluation's takes (wav paths relative to eval/)
VERDICTS_FILE = DECISION.files[2]  # export_parity.json: verdicts by what they rest on
# voicebook's code that loads and speaks an export (a change to it re-checks every export)
SPEAKING_CODE = ("voicebook.decision.parity", "voicebook.coqui.user_load",
                 "voicebook.coqui.latents", "voicebook.measures.takes")  # fmt: skip


def export_of(experiment_path: Path, checkpoint: str | None, voice_name: str | None) -> Path | None:
    """The export folder that holds ``checkpoint`` (and voice ``voice_name``, when given): a
    phase's ``export/`` made from it, or the export folder it is the ``model.pth`` of."""
    if not checkpoint:
        return None
    checkpoint_path = Path(checkpoint).resolve()
    folders = [checkpoint_path.parent, *sorted(Path(experiment_path).glob("phase*/export"))]
    for folder in folders:
        info = folder / "export.json"
        if not info.is_file():
            continue
        record = json.loads(info.read_text(encoding="utf-8"))
        made_from = Path(record.get("checkpoint") or "").resolve()
        if checkpoint_path not in (made_from, (folder / "model.pth").resolve()):
            continue
        if voice_name and voice_name not in record.get("searched_voices", []):
            continue
        return folder
    return None


def evaluation_of(experiment_path: Path) -> dict[str, Any]:
    """What the parity check needs of the evaluation's latest run: its parameters
    (``run_params``), settings (sampling, seed, reference clips, token cap), table and the
    checkpoint it scored of each candidate (``scored``, from the run's inputs)."""
    from voicebook.core.scraps import read_experiment, read_records, run_params
    from voicebook.core.stages import EVALUATION

    scraps = read_experiment(experiment_path).get(EVALUATION.stem)
    record = read_records(experiment_path).get(EVALUATION.stem) or {}
    inputs = record.get("inputs") or {}
    scored = {
        name.removeprefix("candidate "): read["path"]
        for name, read in inputs.items()
        if name.startswith("candidate ") and read and read.get("path")
    }
    return {
        "run_params": run_params(experiment_path, EVALUATION.stem),
        "settings": (scraps.eval_settings if scraps else None) or {},
        "table": scraps.eval_table if scraps else None,
        "scored": scored,
    }


def parity_jobs(experiment_path: Path, evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """One job per evaluated candidate with an export: where the export is, the voice, and the
    evaluation's settings and takes to match (``evaluation``: ``evaluation_of``)."""
    from voicebook.dataprep.splits import VIEW_DIR
    from voicebook.evaluation.scoring import EvalConfig, resolve_candidates

    exp = Path(experiment_path)
    params, settings, table = (evaluation[k] for k in ("run_params", "settings", "table"))
    samples = exp / SAMPLES_FILE
    if table is None or table.empty or not samples.is_file() or not settings:
        return []
    takes = pd.read_csv(samples)
    config = EvalConfig(**{k: v for k, v in params.items() if k in EvalConfig.__dataclass_fields__})
    candidates, _ = resolve_candidates(config.candidates, exp)
    clips = exp / "eval" / VIEW_DIR if (exp / "eval" / VIEW_DIR).is_dir() else exp / "dataset"
    references = [str((clips / r).resolve()) for r in settings.get("reference_clips", [])]
    jobs = []
    scored = evaluation.get("scored") or {}
    for c in candidates:
        checkpoint = scored.get(c.name) or (str(c.checkpoint) if c.checkpoint else None)
        export = export_of(exp, checkpoint, c.voice_name)
        mine = takes[(takes["candidate"] == c.name) & takes["sentence_id"].str.startswith("s")]
        mine = mine[mine["take"] == 1] if "take" in mine else mine  # take 1: the first seed
        mine = mine.head(PARITY_SENTENCES)
        if export is None or mine.empty or c.name not in set(table["candidate"]):
            continue
        jobs.append({
            "candidate": c.name, "export": str(export), "voice_name": c.voice_name,
            "references": references, "sentences": mine["text"].tolist(),
            "takes": [str(exp / "eval" / w) for w in mine["wav"]],
            "language": config.language, "seed": int(settings.get("seed", config.seed)),
            "sampling": {k: settings[k] for k in config.sampling() if k in settings},
            "tokens_per_char": settings.get("audio_tokens_per_char", config.audio_tokens_per_char),
            "device": config.device,
        })  # fmt: skip
    return jobs


def check_exports(
    experiment_path: Path, evaluation: dict[str, Any] | None = None
) -> dict[str, dict]:
    """Export parity of every evaluated candidate with an export (``parity_jobs``), from one
    fresh process: ``{candidate: {"status": "identical" | "differs" | "failed", ...}}``.
    ``evaluation``: ``evaluation_of(experiment_path)`` unless given. A verdict whose job rests
    on what it rested on before is reused from ``VERDICTS_FILE``."""
    from voicebook.core.fileio import write_json_atomic

    evaluation = evaluation if evaluation is not None else evaluation_of(experiment_path)
    jobs = parity_jobs(Path(experiment_path), evaluation)
    path = Path(experiment_path) / VERDICTS_FILE
    known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    keys = {job["candidate"]: rests_on(job) for job in jobs}
    reusable = {k: v for k, v in known.items() if v["status"] != "failed"}
    verdicts = {c: reusable[k] for c, k in keys.items() if k in reusable}
    verdicts |= check_jobs([job for job in jobs if job["candidate"] not in verdicts])
    if jobs:
        write_json_atomic(path, {keys[c]: v for c, v in verdicts.items()})
    return {job["candidate"]: verdicts[job["candidate"]] for job in jobs}


def rests_on(job: dict[str, Any]) -> str:
    """A digest of everything a job's verdict rests on: the job, the content of its export,
    takes and reference clips, and the code that loads and speaks (coqui-tts and torch by
    version, voicebook's ``SPEAKING_CODE`` by content)."""
    from importlib.metadata import version
    from importlib.util import find_spec

    from voicebook.core.runs import content_digest

    files = [job["export"], *job["takes"], *job["references"]]
    files += [find_spec(module).origin for module in SPEAKING_CODE]
    basis = {"job": job, "files": [content_digest(f) for f in files],
             "versions": [version("coqui-tts"), version("torch")]}  # fmt: skip
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def check_jobs(jobs: list[dict[str, Any]]) -> dict[str, dict]:
    """Run ``jobs`` (``parity_jobs``' form) in one fresh process and compare its takes."""
    if not jobs:
        return {}
    with tempfile.TemporaryDirectory(prefix="voicebook-parity-") as work:
        spec = Path(work) / "jobs.json"
        spec.write_text(json.dumps({"work": work, "jobs": jobs}), encoding="utf-8")
        lib = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([lib, os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, "-m", "voicebook.decision.parity", str(spec)],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        spoken = Path(work) / "spoken.json"
        if not spoken.is_file():
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return {j["candidate"]: _failed(j, f"the fresh process failed: {why[0]}") for j in jobs}
        spoken = json.loads(spoken.read_text(encoding="utf-8"))
        return {j["candidate"]: compare(j, spoken[j["candidate"]]) for j in jobs}


def _failed(job: dict[str, Any], why: str) -> dict[str, Any]:
    return {"status": "failed", "export": job["export"], "why": why, "max_difference": None}


def compare(job: dict[str, Any], spoken: dict[str, Any]) -> dict[str, Any]:
    """One candidate's verdict: every loader's takes against the evaluation's, sample by
    sample; the largest difference over all (inf where lengths differ)."""
    import soundfile as sf

    loaders, worst = {}, 0.0
    for how, result in spoken.items():
        if "error" in result:
            return _failed(job, f"{how}: {result['error']}")
        diffs = []
        for take, wav in zip(job["takes"], result["wavs"], strict=True):
            a, b = sf.read(take, dtype="float32")[0], sf.read(wav, dtype="float32")[0]
            diffs.append(float(np.abs(a - b).max()) if a.shape == b.shape else float("inf"))
        loaders[how] = max(diffs)
        worst = max(worst, loaders[how])
    return {
        "status": IDENTICAL if worst <= TOLERANCE else "differs",
        "checked": now(),
        "max_difference": worst,
        "tolerance": TOLERANCE,
        "loaders": loaders,
        "sentences": len(job["takes"]),
        "export": job["export"],
    }


def describe(parity: dict[str, Any] | None) -> str | None:
    """A candidate's export parity in words: "identical", or the alarm with its largest
    difference; None without an export."""
    if not parity:
        return None
    if parity["status"] == IDENTICAL:
        return IDENTICAL
    if parity["status"] == "failed":
        return f"ALARM: the export does not load as a user loads it ({parity['why']})"
    return (
        f"ALARM: the export speaks differently from what was evaluated (largest sample "
        f"difference {parity['max_difference']:.3g}, tolerance {parity['tolerance']:g})"
    )


# --- the fresh process ------------------------------------------------------------------------


def speak_jobs(jobs: list[dict[str, Any]], work: Path) -> dict[str, dict[str, Any]]:
    """Every job's takes, ``{candidate: {loader: {"wavs": [...]} or {"error": ...}}}``. Each
    export is copied elsewhere once and loaded once each way a user does; the jobs on one export
    (a phase's best and its searched voices) speak with that one load, every take seeded."""
    from voicebook.coqui.user_load import USER_LOADERS, load_like_a_user
    from voicebook.core.device import resolve_device

    spoken: dict[str, dict[str, Any]] = {job["candidate"]: {} for job in jobs}
    exports = list(dict.fromkeys(job["export"] for job in jobs))
    for number, export in enumerate(exports):
        moved = Path(shutil.copytree(export, work / f"export{number}" / "moved"))
        sharing = [job for job in jobs if job["export"] == export]
        device = resolve_device(sharing[0]["device"])
        for how in USER_LOADERS:
            try:
                model = load_like_a_user(moved, how, device)
            except Exception as exc:  # noqa: BLE001 - a load that fails is the finding
                model, error = None, {"error": f"{type(exc).__name__}: {exc}"}
            for job in sharing:
                out = work / job["candidate"] / how
                spoken[job["candidate"]][how] = (
                    error if model is None else speak_job(model, job, out)
                )
    return spoken


def speak_job(model: Any, job: dict[str, Any], out: Path) -> dict[str, Any]:
    """One job's sentences spoken by ``model`` (an export as a user loaded it) in the voice a
    user takes: the reference clips, or the searched voice's name in ``speakers_xtts.pth``."""
    from voicebook.coqui.latents import reference_voice
    from voicebook.coqui.user_load import user_voice
    from voicebook.measures.takes import Sampler, sentence_table, synthesize_takes

    try:
        name = job["voice_name"]
        voice = user_voice(model, name) if name else reference_voice(model, job["references"])
        samples = synthesize_takes(
            model, sentence_table(job["sentences"]), voice, out, takes=1, seed=job["seed"],
            sampler=Sampler(**job["sampling"]), language=job["language"],
            tokens_per_char=job["tokens_per_char"],
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a voice or take that fails is the finding
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"wavs": samples["wav"].tolist()}


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    spoken = speak_jobs(spec["jobs"], Path(spec["work"]))
    (Path(spec["work"]) / "spoken.json").write_text(json.dumps(spoken), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])

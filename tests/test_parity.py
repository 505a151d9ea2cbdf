"""Export parity: a moved export, loaded as a user loads it (coqui's Xtts with strict=True, and
TTS.api) in a fresh process, speaks exactly like the model the evaluation scored; an export
with one weight changed raises the alarm and is never recommended."""

from __future__ import annotations

import shutil
from pathlib import Path

import librosa
import pandas as pd
import pytest
import soundfile as sf
import torch
from test_evaluation import DEMO_TOKEN_CAP, base, tuned  # noqa: F401 - the fixtures: the tiny base, a tuned GPT

from voicebook.core.paths import DEMO_DATA_DIR
from voicebook.decision import parity
from voicebook.decision.matrix import CandidateEvidence, decide

pytestmark = pytest.mark.slow  # a fresh process loads every export twice
SENTENCES = ["Jó estét kívánok, kezdjük is!", "Igen, pontosan."]
SAMPLING = {"temperature": 0.65, "repetition_penalty": 10.0, "top_p": 0.85, "top_k": 50}


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("references")
    meta = pd.read_csv(DEMO_DATA_DIR / "interview" / "metadata.csv", sep="|").head(2)
    paths = []
    for i, name in enumerate(meta["audio_file"]):
        wav, _ = librosa.load(DEMO_DATA_DIR / "interview" / name, sr=22050)
        sf.write(folder / f"ref{i}.wav", wav, 22050)
        paths.append(folder / f"ref{i}.wav")
    return paths


def evaluated(base_dir, checkpoint, references, out, voice=None) -> list[str]:
    """The evaluation's takes: voicebook's loader, the evaluation's synthesize and settings."""
    from voicebook.coqui.latents import reference_voice
    from voicebook.coqui.models import load_xtts
    from voicebook.evaluation.measures import synthesize

    model = load_xtts(base_dir, checkpoint)
    voice = voice or reference_voice(model, references)
    takes = synthesize(model, SENTENCES, [], out, language="hu", seed=1, voice=voice,
                       sampling=SAMPLING, tokens_per_char=DEMO_TOKEN_CAP)  # fmt: skip
    return takes["wav"].tolist()


def job(name: str, export: Path, takes: list[str], references, voice_name=None) -> dict:
    return {
        "candidate": name, "export": str(export), "voice_name": voice_name,
        "references": [str(r) for r in references], "sentences": SENTENCES, "takes": takes,
        "language": "hu", "seed": 1, "sampling": SAMPLING, "tokens_per_char": DEMO_TOKEN_CAP,
        "device": "cpu",
    }  # fmt: skip


def test_moved_exports_speak_like_the_evaluation_and_an_altered_one_is_never_recommended(
    references, tmp_path, request
):
    from voicebook.coqui.latents import add_voice, load_voice
    from voicebook.training.bundle import EXPORT_VOICE, export_folder

    base_dir, trained = request.getfixturevalue("base"), request.getfixturevalue("tuned")
    full = export_folder(trained, base_dir, tmp_path / "full", references[0])
    # a searched voice, named in the export's speakers_xtts.pth (as voice search adds it)
    latent, speaker = load_voice(full / "speakers_xtts.pth", EXPORT_VOICE)
    add_voice(full / "speakers_xtts.pth", "searched", latent * 1.1, speaker)
    altered = Path(shutil.copytree(full, tmp_path / "altered"))
    state = torch.load(altered / "model.pth", weights_only=False)
    # one weight changed: a gain of the GPT's final norm (one in layer 0's attention, +0.5,
    # moved the tiny model's audio by one 16-bit step only, below the tolerance)
    state["model"]["gpt.final_norm.weight"][0] += 0.5
    torch.save(state, altered / "model.pth")
    extra = Path(shutil.copytree(full, tmp_path / "extra"))
    state["model"] = {**torch.load(full / "model.pth")["model"], "gpt.unexpected": torch.ones(1)}
    torch.save(state, extra / "model.pth")  # a key coqui's strict load refuses

    takes = evaluated(base_dir, trained, references, tmp_path / "eval" / "full")
    voiced = evaluated(base_dir, trained, references, tmp_path / "eval" / "voice",
                       voice=(latent * 1.1, speaker))  # fmt: skip
    results = parity.check_jobs([
        job("full", full, takes, references),
        job("voice", full, voiced, references, voice_name="searched"),
        job("altered", altered, takes, references),
        job("extra", extra, takes, references),
    ])  # fmt: skip

    for name in ("full", "voice"):  # both user loaders, from a copy elsewhere: the same audio
        assert results[name]["status"] == parity.IDENTICAL, results[name]
        assert set(results[name]["loaders"]) == {"xtts_strict", "tts_api"}
        assert results[name]["max_difference"] <= parity.TOLERANCE
        assert parity.describe(results[name]) == "identical"
    assert results["altered"]["status"] == "differs"
    assert results["altered"]["max_difference"] > 10 * parity.TOLERANCE
    alarm = parity.describe(results["altered"])
    assert alarm.startswith("ALARM") and f"{results['altered']['max_difference']:.3g}" in alarm
    assert results["extra"]["status"] == "failed"
    assert "xtts_strict" in results["extra"]["why"] and "gpt.unexpected" in results["extra"]["why"]

    # the altered export's candidate is never recommended, however good its numbers
    d = decide([CandidateEvidence("base", mel_ce=4.0, text_ce=0.02),
                CandidateEvidence("phase1", mel_ce=2.0, text_ce=0.02, export_parity=alarm)])  # fmt: skip
    assert d.winner == "base"
    assert {v.candidate: v.status for v in d.verdicts}["phase1"] == "disqualified"
    assert any("export parity ALARM" in r for r in d.reasons)

"""Data-prep throughput: voicebook's ``prepare_dataset`` against a plain librosa loop.

Generates (once, seeded) a ~30-minute corpus of speech-like audio in two sources -- clips in
mixed formats and rates with ``metadata.csv``, and 16 kHz recordings with ``.srt`` subtitles --
then prepares it with voicebook and with a plain single-process loop doing the same audio
steps (load + resample, trim, loudness-normalise, write PCM16 WAV), and prints both as
x real time (seconds of input audio per wall-clock second).

One-off import costs (librosa's lazy submodules, pyloudnorm/scipy) are paid before timing,
for both, and printed on their own.

Usage::

    .venv/bin/python benchmarks/bench_dataprep.py [--minutes 30] [--workers 2] [--repeat 3]
        [--corpus DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

_WORDS = (
    "a az egy és hogy nem is de már még csak most itt ott nagyon szép jó rossz ház kert víz "
    "kenyér alma kérdés válasz játék idő perc óra nap este reggel ember gyerek város ország "
    "folyó hegy zene könyv levél asztal szék ablak ajtó út autó vonat hajó madár kutya macska "
    "piros zöld kék fehér fekete gyorsan lassan holnap tegnap mindig soha talán biztosan"
)
WORDS = _WORDS.split()
FORMATS = (  # (extension, sample rate, channels): what people's clips arrive as
    ("flac", 22050, 1),
    ("wav", 44100, 2),
    ("flac", 16000, 1),
    ("wav", 48000, 1),
)


def speechlike(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Harmonic tone with a moving pitch and a syllable-rate envelope, over faint noise."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    level = rng.uniform(0.1, 0.3)
    return (level * voiced * envelope + rng.normal(0, 0.001, t.size)).astype(np.float32)


def sentence(seconds: float, rng: np.random.Generator) -> str:
    words, text = [], ""
    while len(text) < 13 * seconds:
        words.append(str(rng.choice(WORDS)))
        text = " ".join(words)
    return text.capitalize() + ("?" if rng.random() < 0.15 else ".")


def srt_time(s: float) -> str:
    ms = round(s * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def make_corpus(folder: Path, minutes: float, seed: int = 7) -> float:
    """Write the corpus (60 % clips, 40 % subtitled recordings); return its audio seconds."""
    rng = np.random.default_rng(seed)
    clips, show = folder / "clips", folder / "show"
    clips.mkdir(parents=True)
    show.mkdir()
    total, budget, rows = 0.0, minutes * 60 * 0.6, ["audio_file|text"]
    while total < budget:
        ext, sr, channels = FORMATS[len(rows) % len(FORMATS)]
        speech = rng.uniform(2.5, 9.0)
        audio = np.concatenate(
            [np.zeros(int(rng.uniform(0.2, 0.5) * sr), np.float32), speechlike(speech, sr, rng),
             np.zeros(int(rng.uniform(0.2, 0.5) * sr), np.float32)]
        )  # fmt: skip
        if channels == 2:
            audio = np.stack([audio, 0.9 * audio], axis=1)
        name = f"clip_{len(rows):04d}.{ext}"
        sf.write(clips / name, audio, sr, subtype="PCM_16")
        rows.append(f"{name}|{sentence(speech, rng)}")
        total += len(audio) / sr
    (clips / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    per_recording = minutes * 60 * 0.4 / 3
    for k in range(1, 4):
        sr, parts, cues, t = 16000, [], [], 0.5
        parts.append(np.zeros(int(0.5 * sr), np.float32))
        while t < per_recording:
            speech = rng.uniform(1.5, 9.0)
            parts.append(speechlike(speech, sr, rng))
            cues.append((t, t + speech, sentence(speech, rng)))
            gap = rng.uniform(0.3, 0.8)
            parts.append(np.zeros(int(gap * sr), np.float32))
            t += speech + gap
        audio = np.concatenate(parts)
        sf.write(show / f"show_{k}.flac", audio, sr, subtype="PCM_16")
        srt = "\n".join(
            f"{n}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n"
            for n, (a, b, text) in enumerate(cues, 1)
        )
        (show / f"show_{k}.srt").write_text(srt, encoding="utf-8")
        total += len(audio) / sr
    return total


def corpus_seconds(folder: Path) -> float:
    return sum(sf.info(p).duration for p in folder.rglob("*") if p.suffix in (".wav", ".flac"))


def tokenizer(folder: Path):
    """A small XTTS-style BPE vocab (coqui's VoiceBpeTokenizer) over the benchmark words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[hu]", "[en]"]
    alphabet = sorted(set("".join(WORDS)) | set(".,?!"))
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator([" ".join(WORDS)], trainer)
    bpe.save(str(folder / "vocab.json"))
    return VoiceBpeTokenizer(str(folder / "vocab.json"))


def plain_loop(corpus: Path, out: Path, target_lufs: float = -23.0) -> None:
    """The straightforward way: librosa.load each file, cut cues, trim, normalise, write."""
    import librosa
    import pyloudnorm

    from voicebook.dataprep.segments import parse_subtitles

    out.mkdir(parents=True)
    meter = pyloudnorm.Meter(22050)

    def finish(y: np.ndarray, name: str) -> None:
        y, _ = librosa.effects.trim(y, top_db=40)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = pyloudnorm.normalize.loudness(y, meter.integrated_loudness(y), target_lufs)
        sf.write(out / f"{name}.wav", np.clip(y, -1, 1), 22050, subtype="PCM_16")

    for line in (corpus / "clips" / "metadata.csv").read_text().splitlines()[1:]:
        name = line.split("|")[0]
        y, _ = librosa.load(corpus / "clips" / name, sr=22050, mono=True)
        finish(y, Path(name).stem)
    for recording in sorted((corpus / "show").glob("*.flac")):
        y, _ = librosa.load(recording, sr=22050, mono=True)
        cues = parse_subtitles(recording.with_suffix(".srt").read_text(encoding="utf-8"))
        for k, (a, b, _text) in enumerate(cues):
            finish(y[int(a * 22050) : int(b * 22050)], f"{recording.stem}_{k}")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the pool's workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def keep_best(best: dict[str, tuple[float, float]], name: str, wall: float, cpu: float) -> None:
    if name not in best or wall < best[name][0]:
        best[name] = (wall, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=None, help="reuse/generate corpus here")
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N runs")
    args = parser.parse_args()

    from voicebook.dataprep import DataPrepConfig, prepare_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_dataprep_"))
    corpus = args.corpus or work / "corpus"
    t0 = time.perf_counter()
    seconds = corpus_seconds(corpus) if corpus.exists() else make_corpus(corpus, args.minutes)
    print(f"corpus: {corpus} -- {seconds / 60:.1f} min of audio ({time.perf_counter() - t0:.1f} s)")
    tok = tokenizer(work)

    t0 = time.perf_counter()
    from voicebook.dataprep.dataset import _warm_up

    _warm_up()  # librosa.effects / feature and pyloudnorm imports: paid once per process
    print(f"one-off imports and warm-up: {time.perf_counter() - t0:.1f} s (not in the figures)")
    print(f"load average before timing: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    sources = [{"name": "clips", "path": str(corpus / "clips")},
               {"name": "show", "path": str(corpus / "show")}]  # fmt: skip
    configs = {
        f"voicebook prepare_dataset, {n} process{'es' if n > 1 else ''}": n
        for n in sorted({1, args.workers})
    }
    best: dict[str, tuple[float, float]] = {}  # name -> (wall, CPU) of the fastest run
    for run in range(args.repeat):  # interleaved, so background load hits every pipeline
        for name, workers in configs.items():
            config = DataPrepConfig(sources=sources, workers=workers)
            shutil.rmtree(work / "out", ignore_errors=True)  # both pipelines write afresh
            t0, c0 = time.perf_counter(), cpu_seconds()
            result = prepare_dataset(config, work / "out" / "dataset", tok, progress=False)
            keep_best(best, name, time.perf_counter() - t0, cpu_seconds() - c0)
            if run == 0:
                totals = result.card["totals"]
                print(f"  {name}: kept {totals['clips']} clips ({totals['minutes']} min), "
                      f"rejected {totals['rejected']}")  # fmt: skip
        plain = work / "plain"
        shutil.rmtree(plain, ignore_errors=True)
        t0, c0 = time.perf_counter(), cpu_seconds()
        plain_loop(corpus, plain)
        name = "plain librosa loop, 1 process"
        keep_best(best, name, time.perf_counter() - t0, cpu_seconds() - c0)
    print(f"load average after timing: {os.getloadavg()[0]:.2f}; best of {args.repeat} run(s)")
    print(f"\n{'pipeline':<44}{'wall s':>8}{'x real time':>13}{'CPU s':>8}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<44}{wall:>8.2f}{seconds / wall:>13.0f}{cpu:>8.2f}")
    print("(CPU s: this process and its workers; it depends less on other load than wall s)")
    print(f"\noutputs left in {work}")


if __name__ == "__main__":
    main()

"""Set-up's last word: is .venv exactly the lock, and does everything the stages load, load?

Run with the virtual environment's Python (scripts/setup.sh does): exits 1 naming each failure
and what to do about it. ``tests/test_environment.py`` runs the same checks, so CI catches drift.

Importing ``TTS`` alone imports no torchaudio, so a check that stops there cannot see a
torchaudio built for another torch: each check below loads what a stage really loads.
"""

from __future__ import annotations

import importlib
import io
import site
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK_EXPORT = REPO_ROOT / "requirements.lock.txt"
PROJECT = "voicebook"
# What uv puts into every environment it makes, beside the lock's packages.
TOOLING = {"pip", "setuptools", "wheel"}

RESYNC = "run 'make setup' (it re-syncs .venv from uv.lock)"


def locked_versions(export: Path = LOCK_EXPORT) -> dict[str, str]:
    """name -> version of every line of the exported lock whose markers hold on this machine."""
    pins = {}
    for raw in export.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith(("#", "-")):
            continue
        spec, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = spec.partition("==")
        pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


def installed_versions() -> dict[str, str]:
    """What this environment's site-packages holds. Not every folder on ``sys.path``: once
    ``pkg_resources`` is imported (webrtcvad does), setuptools puts its ``_vendor`` folder there,
    whose own copies of jaraco, packaging and others are not installed packages."""
    found = metadata.distributions(path=site.getsitepackages())
    return {canonicalize_name(d.metadata["Name"]): d.version for d in found}


def lock_drift(export: Path = LOCK_EXPORT) -> list[str]:
    """Every difference between what is installed and what the lock says, one line each."""
    want, have = locked_versions(export), installed_versions()
    problems = [
        f"{name}: installed {have.get(name, 'nothing')}, lock says {version}"
        for name, version in sorted(want.items())
        if have.get(name) != version
    ]
    problems += [
        f"{name} {version} is installed but not in the lock"
        for name, version in sorted(have.items())
        if name not in want and name != PROJECT and name not in TOOLING
    ]
    return problems


def _torchaudio_library():
    import torchaudio._extension as ext

    # _load_lib returns False (no error) when the extension is missing altogether.
    assert ext._IS_TORCHAUDIO_EXT_AVAILABLE, "torchaudio's C++ extension is not there"


def _torchcodec_ffmpeg():
    import numpy as np
    import soundfile as sf
    from torchcodec.decoders import AudioDecoder

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(2205, dtype="float32"), 22050, format="WAV")
    samples = AudioDecoder(buffer.getvalue()).get_all_samples()
    assert samples.sample_rate == 22050, samples.sample_rate


def _kernel():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("voicebook")
    python = Path(spec.argv[0])
    assert python.parent.parent.resolve() == Path(sys.prefix).resolve(), (
        f"kernel 'voicebook' runs {python}, not this environment's Python"
    )


def _whisper():
    importlib.import_module("faster_whisper")
    from voicebook.asr.models import BASE_PACKAGES, _package_data

    for i, package in enumerate(BASE_PACKAGES, 1):  # joined and sha256-checked on first use
        if not (_package_data(package) / f"model.bin.part{i}").is_file():
            raise FileNotFoundError(f"{package} has no data/model.bin.part{i}")


def _modules(*names):
    return lambda: [importlib.import_module(name) for name in names]


# (what, how to check it, what to do when it fails)
CHAIN = [
    ("torch", _modules("torch"), RESYNC),
    (
        "torchaudio's C++ library (libtorchaudio)",
        _torchaudio_library,
        "torch and torchaudio must be built for each other: " + RESYNC,
    ),
    (
        "torchcodec decoding with FFmpeg",
        _torchcodec_ffmpeg,
        "install FFmpeg's shared libraries (Debian: 'apt-get install ffmpeg'), then " + RESYNC,
    ),
    (
        "coqui's XTTS model and GPTTrainer",
        _modules("TTS.tts.models.xtts", "TTS.tts.layers.xtts.trainer.gpt_trainer"),
        RESYNC,
    ),
    (
        "resemblyzer (speaker similarity)",
        _modules("resemblyzer"),
        "install a C compiler, then " + RESYNC,
    ),
    (
        "faster-whisper (CTranslate2) and the offline Whisper base's two packages",
        _whisper,
        RESYNC,
    ),
    ("papermill, scrapbook, voicebook", _modules("papermill", "scrapbook", "voicebook"), RESYNC),
    (
        "the Jupyter kernel 'voicebook'",
        _kernel,
        "run 'make setup' (it installs the kernel spec inside .venv)",
    ),
]


def import_failures() -> list[str]:
    failures = []
    for what, check, fix in CHAIN:
        try:
            check()
        except Exception as error:  # noqa: BLE001 - every failure is reported, with its fix
            failures.append(f"{what}: {type(error).__name__}: {error}\n    fix: {fix}")
    return failures


def main() -> int:
    problems = [f"not the lock: {p}" for p in lock_drift()] + import_failures()
    for problem in problems:
        print(f"voicebook set-up check failed: {problem}", file=sys.stderr)
    if not problems:
        print(f"[setup] checked: {len(locked_versions())} packages as locked; imports load")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

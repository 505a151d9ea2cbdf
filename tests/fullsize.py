"""A random-weight XTTS v2 at the real shape, and a way to run a stage and measure it.

``fullsize_base()`` builds (once, cached under the voicebook cache dir) the real XTTS v2 GPT
shape (30 layers, 1024 channels, 16 heads, ``decoder_input_dim`` 1024: 454 M weights,
``model.pth`` 1.82 GB) from the tiny base's vocab, DVAE and mel stats; about 50 s and 5 GB of
RAM, in a subprocess so the caller's memory stays small. ``run_measured`` runs a Python module or
snippet in a subprocess and returns its peak RSS (``ru_maxrss``, exact) and wall time, and
the times at which each train row reached ``curves.csv`` (for seconds per step).

Used by ``tests/test_fullsize.py`` and ``benchmarks/bench_fullsize.py`` (which may point the
subprocess at another checkout's ``lib``, so everything here talks to voicebook only through
its command line and stable names).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_SHAPE = {"gpt_layers": 30, "gpt_n_model_channels": 1024, "gpt_n_heads": 16}
FULL_DECODER_INPUT_DIM = 1024
FULLSIZE_VERSION = 1  # bump when the recipe changes, so the cache rebuilds
BASE_FILES = ("model.pth", "dvae.pth", "mel_stats.pth", "vocab.json", "config.json")
SPEAKERS = "speakers_xtts.pth"


def fullsize_base() -> Path:
    """The cached full-size base folder (built in a subprocess the first time)."""
    sys.path.insert(0, str(REPO / "lib"))
    from voicebook.coqui.base import resolve_base
    from voicebook.core.paths import cache_dir

    tiny = resolve_base("tiny")
    folder = cache_dir() / f"fullsize-v{FULLSIZE_VERSION}-{tiny.name}"
    if all((folder / n).is_file() for n in (*BASE_FILES, SPEAKERS)):
        return folder
    code = f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); import fullsize; "
    code += f"fullsize.build({str(tiny)!r}, {str(folder)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(REPO / "lib"))
    return folder


def build(tiny: str, dest: str) -> None:
    """Write the full-size base into ``dest`` (via ``<dest>.partial``, renamed when complete)."""
    import torch
    from TTS.tts.models.xtts import Xtts

    from voicebook.coqui.models import load_config, load_xtts_files

    tiny_dir, folder = Path(tiny), Path(dest)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in ("dvae.pth", "mel_stats.pth", "vocab.json"):
        shutil.copy2(tiny_dir / name, partial / name)
    config = load_config(tiny_dir)
    for key, value in FULL_SHAPE.items():
        setattr(config.model_args, key, value)
    config.model_args.decoder_input_dim = FULL_DECODER_INPUT_DIM
    config.save_json(str(partial / "config.json"))
    torch.manual_seed(0)
    model = Xtts(config)
    model.mel_stats = torch.load(partial / "mel_stats.pth", weights_only=True)
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, partial / "model.pth")
    del model
    model = load_xtts_files(partial, config)
    clip = min((REPO / "data" / "demo" / "interview").glob("*.flac"))
    latent, speaker = model.get_conditioning_latents([str(clip)])
    voice = {"gpt_cond_latent": latent, "speaker_embedding": speaker}
    torch.save({"fullsize": voice}, partial / SPEAKERS)
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)


def _env(lib: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(lib), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Runs the target with runpy and writes the process's peak RSS when it ends, however it ends.
_MEASURE = """
import json, resource, runpy, sys
out, kind, target, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
try:
    sys.argv = [target, *argv]
    if kind == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        exec(compile(target, "<snippet>", "exec"), {"__name__": "__main__"})
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    open(out, "w").write(json.dumps({"peak_rss": peak}))
"""


@dataclass
class Measured:
    returncode: int
    seconds: float
    peak_rss: int
    train_row_times: list[float] = field(default_factory=list)  # when each train row appeared
    peak_disk: int = 0  # the watched folder's largest size during the run
    output: str = ""

    def seconds_per_step(self) -> float:
        """Median interval between consecutive train rows (steps with no eval between)."""
        gaps = sorted(b - a for a, b in zip(self.train_row_times, self.train_row_times[1:]))
        return gaps[len(gaps) // 2] if gaps else float("nan")


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``, each hard-linked file counted once (like du)."""
    seen, total = set(), 0
    for path in folder.rglob("*") if folder.is_dir() else []:
        try:
            st = path.lstat()
        except FileNotFoundError:  # removed while we looked (a rotated checkpoint)
            continue
        if path.is_file() and not path.is_symlink() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def run_measured(
    kind: str, target: str, argv: list[str], lib: Path, watch: Path | None = None, timeout=1800
) -> Measured:
    """Run ``python -m target argv`` (kind "module") or a code snippet (kind "code") with
    ``lib`` first on PYTHONPATH; watch ``watch`` (a phase folder) for train rows and disk."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"voicebook-measure-{os.getpid()}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", _MEASURE, str(out), kind, target, *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=_env(lib), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(proc.stdout), daemon=True)
    reader.start()
    rows: list[float] = []
    peak_disk, seen_rows = 0, 0
    while proc.poll() is None:
        if time.perf_counter() - start > timeout:
            proc.kill()
            break
        if watch is not None:
            seen_rows = _new_train_rows(watch / "curves.csv", seen_rows, rows, start)
            peak_disk = max(peak_disk, folder_bytes(watch))
        time.sleep(0.2)
    reader.join(timeout=10)
    seconds = time.perf_counter() - start
    if watch is not None:
        _new_train_rows(watch / "curves.csv", seen_rows, rows, start)
        peak_disk = max(peak_disk, folder_bytes(watch))
    peak = json.loads(out.read_text())["peak_rss"] if out.is_file() else 0
    out.unlink(missing_ok=True)
    return Measured(proc.returncode, seconds, peak, rows, peak_disk, "".join(chunks))


def _new_train_rows(curves: Path, seen: int, rows: list[float], start: float) -> int:
    if not curves.is_file():
        return seen
    lines = curves.read_text().splitlines()[1:]
    now = time.perf_counter() - start
    for line in lines[seen:]:
        if ",train," in line:
            rows.append(now)
    return len(lines)


if __name__ == "__main__":
    print(fullsize_base())

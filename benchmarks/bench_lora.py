"""LoRA against full fine-tuning at full size (the random-weight XTTS v2 of ``tests/fullsize.py``,
454 M weights): seconds per step, peak RSS, and the size of a periodic checkpoint and of the best
model, one phase 1 per variant, each in its own process.

    .venv/bin/python benchmarks/bench_lora.py --steps 2                  # full, lora r8, lora r32
    .venv/bin/python benchmarks/bench_lora.py --variants lora:8 --device cuda

A variant is ``full`` or ``lora:<rank>`` (lora_alpha = 2 x rank). Steps, batch and the rest are
``bench_fullsize.py``'s; the lr is the same for every variant (what a step costs does not
depend on it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
import fullsize  # tests/ is put on the path just above
from bench_fullsize import phase_args

from voicebook.dataprep.demo import write_demo_dataset


def variant_args(variant: str) -> list[str]:
    if variant == "full":
        return ["--finetune", "full"]
    rank = int(variant.removeprefix("lora:"))
    return ["--finetune", "lora", "--lora-rank", str(rank), "--lora-alpha", str(2.0 * rank)]


def measure(variant: str, root: Path, base: Path, dataset: Path, a) -> dict:
    out = root / variant.replace(":", "")
    args = phase_args("phase1", out, base, dataset, a) + variant_args(variant)
    args += ["--device", a.device]
    watch = out / "bench" / "phase1"
    m = fullsize.run_measured("module", "voicebook.training", args, a.lib, watch=watch)
    if m.returncode != 0:
        print(m.output[-3000:])
        raise SystemExit(f"{variant} failed (exit {m.returncode})")
    size = {}
    for kind in ("checkpoint", "best_model"):
        files = sorted(watch.glob(f"*/{kind}_*.pth"))
        size[kind] = max((p.stat().st_size for p in files), default=0) / 1e6
    shutil.rmtree(out, ignore_errors=True)  # a full one holds 5+ GB
    return {
        "variant": variant,
        "s/step": m.seconds_per_step(),
        "peak RSS GB": m.peak_rss / 1e9,
        "checkpoint MB": size["checkpoint"],
        "best model MB": size["best_model"],
        "run s": m.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["full", "lora:8", "lora:32"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--lib", type=Path, default=REPO / "lib", help="the checkout's lib to run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--keep", type=int, default=1, help="keep_checkpoints")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--device", default="cpu")
    a = parser.parse_args()
    base = fullsize.fullsize_base()
    root = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    try:
        n_train = 2 * a.batch_size * a.steps
        dataset = write_demo_dataset(root / "dataset", n_train=n_train, n_eval=2)
        print(f"base {base}; {a.steps} steps at batch {a.batch_size} on {a.device}")
        for variant in a.variants:  # printed as each ends: a full one takes minutes on a CPU
            row = measure(variant, root, base, dataset, a)
            print(
                "  ".join(
                    f"{k} {v:.2f}" if isinstance(v, float) else str(v) for k, v in row.items()
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

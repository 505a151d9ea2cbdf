"""Full-size XTTS v2 (random weights, real shape: 454 M weights) through the training stages on
this machine: seconds per step, peak RSS and disk per phase, for this checkout or another.

    .venv/bin/python benchmarks/bench_fullsize.py --steps 4                      # phase 1
    .venv/bin/python benchmarks/bench_fullsize.py --stages phase1 phase2 eval
    .venv/bin/python benchmarks/bench_fullsize.py --lib /path/to/other/checkout/lib   # before/after

Each stage runs in its own process (``python -m voicebook.training``, or the evaluation stage's
``evaluate``) with ``--lib`` first on PYTHONPATH, so two checkouts are measured the same way.
The full-size base is built once by ``tests/fullsize.py`` (cached in the voicebook cache).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import fullsize  # tests/ is put on the path just above

from voicebook.dataprep.demo import write_demo_dataset

EVALUATE = """
from pathlib import Path
from voicebook.evaluation import scoring as evaluation
config = evaluation.EvalConfig(experiment="bench", outputs_dir={out!r}, candidates=["phase1"],
    test_sentences=["Jó napot."], n_reference_clips=1, max_eval_batches=1, eval_batch_size=2,
    hidden_reference_sentences=0)
evaluation.evaluate(config, Path({out!r}) / "bench", Path({base!r}))
"""


def phase_args(stage: str, out: Path, base: Path, dataset: Path, a: argparse.Namespace) -> list:
    half = str(max(a.steps // 2, 1))  # an eval (best model) and a checkpoint mid-run
    args = [stage, "--experiment", "bench", "--outputs-dir", str(out), "--base-model", str(base)]
    args += ["--dataset-dir", str(dataset), "--max-steps", str(a.steps), "--epochs", "100"]
    args += ["--batch-size", str(a.batch_size), "--eval-every", half, "--save-every", half]
    return args + ["--keep-checkpoints", str(a.keep), "--lr", str(a.lr)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--stages", nargs="+", default=["phase1"], choices=["phase1", "phase2", "eval"]
    )
    parser.add_argument("--lib", type=Path, default=REPO / "lib", help="the checkout's lib to run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--keep", type=int, default=1, help="keep_checkpoints")
    # Low enough that the random-weight model's eval Mel CE falls, so a best model is written
    # after the optimizer has state (the step-0 best has none: it is small on any branch).
    parser.add_argument("--lr", type=float, default=5e-5)
    a = parser.parse_args()
    base = fullsize.fullsize_base()
    root = Path(tempfile.mkdtemp(prefix="bench-fullsize-"))
    try:
        out = root / "outputs"
        n_train = 2 * a.batch_size * a.steps
        dataset = write_demo_dataset(out / "bench" / "dataset", n_train=n_train, n_eval=2)
        print(f"lib {a.lib.resolve()}; base {base}; {a.steps} steps at batch {a.batch_size}")
        for stage in a.stages:
            if stage == "eval":
                code = EVALUATE.format(out=str(out), base=str(base))
                m = fullsize.run_measured("code", code, [], a.lib, watch=out / "bench" / "eval")
            else:
                args = phase_args(stage, out, base, dataset, a)
                watch = out / "bench" / stage
                m = fullsize.run_measured("module", "voicebook.training", args, a.lib, watch=watch)
            if m.returncode != 0:
                print(m.output[-3000:])
                raise SystemExit(f"{stage} failed (exit {m.returncode})")
            folder = out / "bench" / ("eval" if stage == "eval" else stage)
            final = fullsize.folder_bytes(folder)
            per_step = f"{m.seconds_per_step():.1f} s/step, " if stage != "eval" else ""
            print(
                f"{stage}: {m.seconds:.0f} s, {per_step}peak RSS {m.peak_rss / 1e9:.1f} GB, "
                f"disk peak {m.peak_disk / 1e9:.1f} GB, at the end {final / 1e9:.1f} GB"
            )
            big = sorted(folder.rglob("*.pth"), key=lambda p: -p.stat().st_size)[:4]
            print("  " + ", ".join(f"{p.name} {p.stat().st_size / 1e9:.2f} GB" for p in big))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""docs/stages.md, generated from the stage contract (``voicebook.core.stages``).

The table's rows, files and scraps come from ``STAGES``; what each scrap and file holds, in
words, is here. ``render()`` refuses a scrap of the contract without words, or words for a scrap
the contract lacks, and ``tests/test_stages.py`` fails when docs/stages.md differs from
``render()``. Regenerate it with ``python -m voicebook.core.stages_doc`` (``make docs``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from voicebook.core.paths import REPO_ROOT
from voicebook.core.stages import STAGES

DOC_PATH = REPO_ROOT / "docs" / "stages.md"

# fmt: off
PHASE_SCRAPS = {
    "stage": "(`\"phase1\"`)",
    "params": "(dict)",
    "best_mel_ce": "(the validation split's Mel CE at the best step)",
    "best_text_ce": "",
    "best_step": "",
    "best_checkpoint": "(path)",
    "final_step": "",
    "curves": "(DataFrame: `step, split, loss_mel_ce, loss_text_ce, loss, lr, grad_norm`; split is `train` or `eval`)",
    "health": "(list of `{step, kind, severity, message}`; severity `info`/`warning`/`alarm`/`stop`)",
    "selection": "(dict: `select_by`, `picked_step`, `picked_checkpoint`, `why`, `kept` (records: every kept best model, `step, mel_ce, text_ce, checkpoint`, with evidence `cer, speaker_similarity, mos, rate_error, failure`, and `picked`), `comparisons`, `seconds`); the `best_*` scraps are the pick's",
}
SCRAPS = {
    "00_data_prep": {
        "dataset_card": "(dict)",
        "n_train": "(train clips)",
        "n_eval": "(validation clips: what the phases select on)",
        "n_test": "(test clips: what the evaluation reports)",
        "minutes_total": "",
        "n_rejected": "",
    },
    "01_phase1": PHASE_SCRAPS,
    "02_phase2": PHASE_SCRAPS | {"stage": "(`\"phase2\"`)", "parent_checkpoint": "(the phase-1 checkpoint it continued from)"},
    "02b_voice_search": {
        "voice_search": "(dict: `voice_name`, `method`, `init_from`, `checkpoint`, `split` (validation: what the search selected on), `start_mel_ce` and `best_mel_ce` (Mel CE of the frozen GPT given the starting / kept latent: the latent half), `start_speaker_similarity` and `best_speaker_similarity` (of audio decoded with the starting / kept embedding, the kept latent held: the speaker half), per half `best_generation`, `generations`, `stop_reason`, `seconds_per_generation`, `search_dims` (the speaker half's prefixed `speaker_`), `minutes` (whole stage), `search_minutes`, `voice_file`, `export_voice_file`, `reference_clips`, `n_train_clips`, `n_eval_clips`, `params`)",
        "voice_search_curves": "(DataFrame: `half, generation, train_loss, train_best_loss, heldout_loss, seconds`; loss = Mel CE for half `latent`, 1 - speaker similarity for half `speaker`; generation 0 is each half's start)",
    },
    "03_evaluation": {
        "eval_table": "(DataFrame, one row per candidate, every number on the test split (`split`; `validation` for a dataset made with two splits): `candidate, label, checkpoint, split, mel_ce, text_ce, speaker_similarity, rtf, cer, n_sentences, n_eval_batches, voice_mel_ce, general_text_ce, general_cer, cap_hits, short_cap_hit, dvae_mse, mos, rate_error, runaway_per_100, truncated_per_100, skipped_or_repeated_per_100, failure_per_100, n_takes, takes_per_sentence`, then `mel_ce[<source>]` and `text_ce[<source>]` per source; skipped candidates are left out; `cap_hits` counts test sentences whose generation ran into the token cap (a short sentence is always among them, `short_cap_hit`); `dvae_mse` is the base DVAE's held-out reconstruction MSE, the same for every candidate; `voice_mel_ce` is the held-out Mel CE given the one voice the candidate speaks with, the measure 02b optimises; `speaker_similarity`, `cer`, `mos` and `rate_error` are means over the test sentences' takes, the `*_per_100` failure rates over every take (stress set included); when 02b ran, the default candidates add `<init_from>-voice`, the searched voice on the model it was searched with)",
        "eval_notes": "(list of plain sentences: skipped candidates, no ASR, ...)",
        "eval_per_source": "(DataFrame, one row per candidate and source, then `all`: `candidate, source, n_clips, mel_ce, text_ce`; each held-out clip's loss from a one-clip batch, so the clip-weighted mean of the sources is the `all` row)",
        "eval_settings": "(dict: `temperature, repetition_penalty, top_p, top_k, temperature_sweep, reference_mode` (`first`, `auto` or `files`), `reference_clips` (the files the voice was made from), `audio_tokens_per_char, short_test_sentence, seed`, `split` (the held-out split scored), `length_penalty`, `takes`, `stress_sentences`, `bootstrap_seed`, `speaker_seconds_per_char` (the train clips') and `mos` (the quality model, empty when off))",
        "temperature_sweep": "(DataFrame, one row per candidate and swept temperature: `candidate, temperature, n_sentences, cap_hits, speaker_similarity, rtf, cer`; empty without `temperature_sweep`; its wavs in `eval/<candidate>/temperature_<t>/`)",
        "eval_takes": "(DataFrame, one row per candidate, sentence and take: `candidate, sentence_id` (`sNN` test, `xNN` stress set)`, set, take, seed, text, wav, audio_s, synth_s, codes, cap, cap_hit, cer, speaker_similarity, mos, sec_per_char, rate_error, runaway, truncated, skipped_or_repeated, failure, heard`; every candidate's take k of a sentence has the same seed and its voice's one conditioning, so takes pair up across candidates)",
        "eval_clip_losses": "(DataFrame, one row per candidate and held-out clip: `candidate, audio_file, source, mel_ce, text_ce` from one-clip batches; a voice's rows are its checkpoint's; what the bootstrap over clips resamples)",
        "dvae_reconstruction": "(dict: per source of the held-out clips, and `all`: `clips, mse, mae, peak`, the DVAE's encode-decode error in normalised log-mel units)",
        "codebook": "(dict: per source codes used of 1024, entropy, perplexity)",
        "listening_summary": "(DataFrame: `candidate, scale, mean, ci_low, ci_high, n, below_minimum` (n < 3: shown, not used to decide); the hidden real recording as candidate `reference`; a changed rating counts with its latest row; with `exclude_flagged_raters` a rater's sentences where they scored the real recording below a synthesis are left out, and all their ratings past 15 % of their sentences and more than one)",
        "ab_summary": "(DataFrame of A/B wins, losses, ties, win rate per candidate; same exclusion)",
        "ab_pairs": "(DataFrame per pair: `first, second, comparisons, first_wins, second_wins, ties, p_value`, a two-sided sign test over the non-tied answers)",
        "hidden_reference": "(DataFrame, one row per rater who heard the real recording: `rater, sentences, reference_overall, candidates_overall, slips, slip_share, excluded`)",
        "listening_left_out": "(DataFrame: `rater, sentence, ratings, reason`; sentence `(all)` when the whole rater is left out)",
    },
    "04_decision_matrix": {
        "recommendation": "(dict: `winner`, `winner_label`, `winner_checkpoint`, `tier`, `reasons` list of plain sentences, `verdicts` per candidate, `thresholds`, `stale` (why the evidence rests on replaced runs; then `winner` is empty), `rerun` (the stages to re-run, in order), `comparisons` (list of `candidate, against, metric, n, difference, ci_low, ci_high, win_rate, verdict, unit, takes`: against the base and against the winner), `finetuning_beat_zero_shot` (bool, None without comparisons))",
    },
}
WRITES = {
    "00_data_prep": "`dataset/` — `wavs/`, `metadata_train.csv`, `metadata_eval.csv` (validation), `metadata_test.csv` (test; coqui format, header `audio_file|text|speaker_name`), `rejected.csv` (`source,item,reason`), `clips.csv` (one row per clip: split, source, category, duration, loudness, tokens), `card.json`, `card.html`; rebuilt in a hidden `.dataset.building/` and swapped in",
    "01_phase1": "`phase1/` — trainer run folder(s) (periodic `checkpoint_<step>.pth` with optimizer state, the last `keep_checkpoints` kept; `best_model_<step>.pth` slim, weights only), `export/` (slim `model.pth`, `config.json`, `vocab.json`, `reference.wav`, `speakers_xtts.pth` (the base's speakers plus `voicebook_reference`, the exported model's latents of `reference.wav`, and the searched voice when 02b searched from this phase's exported checkpoint), plus `dvae.pth`/`mel_stats.pth` links for evaluation), `curves.csv`, `health.json`, `status.json` (also the `device` it trained on)",
    "02_phase2": "`phase2/` — same as phase 1, with `parent` (the checkpoint it continued from) in `status.json`",
    "02b_voice_search": "`voice_search/voices/<voice_name>/` per voice — `speakers_xtts.pth` (`{voice_name: {gpt_cond_latent (1, 32, d), speaker_embedding (1, 512, 1)}}`, XTTS's own layout), `reference_voice.pth` (the starting voice, same layout), `curves.csv`, `search.json` (summary, params, state); a search of the same voice with other parameters moves its files to `voices/<voice_name>/history/<n>/`; `voice_search/` holds a copy of the latest search's files",
    "03_evaluation": "`eval/<candidate>/*.wav`, `eval/eval_table.csv`, `eval/samples.csv` (wav paths relative to `eval/`; with `hidden_reference_sentences` > 0 it also lists the real held-out clips as candidate `reference`, copied to `eval/reference/`), `ratings.csv` (appended, never rewritten), `eval/takes.csv` (every take, measured: the `eval_takes` scrap; first takes are `sNN.wav`, later ones `sNN_tK.wav`)",
    "04_decision_matrix": "`report.html`, `decision.json` (the previous ones kept as `*.prev.*`), `export_parity.json` (the export parity verdicts by what they rest on: reused while that is unchanged)",
}
# fmt: on

INTRO = """# Stages, their outputs and their scraps

<!-- Generated from lib/voicebook/core/stages.py by `python -m voicebook.core.stages_doc`: edit there. -->

Every stage is a notebook in `notebooks/` with a cell tagged `parameters` whose defaults are the
cheap demo settings. Every notebook has at least these parameters:

```python
experiment = "demo"   # outputs/<experiment>/
outputs_dir = ""      # empty: $VOICEBOOK_OUTPUTS or <repo>/outputs
```

and finds its experiment folder with `voicebook.core.paths.experiment_dir(experiment, outputs_dir)`.

**The contract is code**: `lib/voicebook/core/stages.py` defines each stage's notebook, the scraps it
publishes, the files it writes and the parameters the report shows beside its numbers; the runner
and the decision take stage names from there, and `tests/test_stages.py` checks that this page,
the notebooks and the configs agree with it (parameter defaults compared by value).

**Parameters are checked.** The first code cell after the parameters calls
`voicebook.core.runs.start_run(stem, globals())`: a name that papermill injected (`-p`, `-f`) and the
parameters cell does not declare stops the notebook there, naming it and the closest declared
names (`-p lrr 1e-6` fails with "did you mean 'lr'").

**A run is a run.** That first cell also starts the stage's run: an id, when it started, its
parameters; while it runs, the library notes what it read (the dataset, the checkpoint it starts
from, the candidates it scores: path, content digest and the run that made it) and what it wrote.
Running the whole notebook again, in any kernel, is a new run. A cell run on its own after a
restart (03's codebook or listening results) adds its scraps to the stage's latest run and says so:
a run replaces the stage's record only when it publishes the stage's first scrap in the table below
(what only a whole run publishes: `eval_table`, `dataset_card`, ...).

**How results travel.** A stage publishes with `voicebook.core.scraps.publish(experiment_path, stage,
{name: value})`: each value is glued into the running notebook as a scrapbook scrap (so
`sb.read_notebook("out.ipynb").scraps` answers whoever asks, wherever papermill wrote it), and the
same values are recorded, with the run's identity, inputs and outputs, in
`outputs/<experiment>/results/<stage>.json` (atomic write; the record of an earlier run moves to
`results/history/`). The report and the decision read those records
(`voicebook.core.scraps.read_experiment`), so the latest run of every stage reaches the report however
it was run. A stage with no record (run by an older voicebook) falls back to the executed notebook
that the runner writes to `outputs/<experiment>/notebooks/<stem>.ipynb`. A scrap that is not in
the stage's contract is refused with an error naming the file to change. Consumers read each
stage's typed view (`result.scraps.evaluation.eval_table`, `scraps.phase(stem).best_mel_ce`):
no scrap name is written outside the contract, which a test checks by reading every module.

**Lineage.** `voicebook.core.lineage` compares what each run read with the latest runs: when a run a
stage rests on was replaced (phase 1 re-ran after phase 2 started from it; data prep re-ran after
the phases), everything downstream is stale, named with the reason and the stages to re-run in
order, in the report and in `decision.json`; the decision then recommends nothing.

**Three splits.** Data prep writes train, validation (`metadata_eval.csv`, coqui's "eval") and test
(`metadata_test.csv`) splits. The phases and the voice search select on validation; the evaluation
scores every candidate on test, and the report labels the split of every number. A dataset made
with two splits still evaluates, on validation, with a note saying how to rebuild it.

| notebook | writes under `outputs/<experiment>/` | scraps |
|---|---|---|
"""

OUTRO = """
The evaluation's sampling (`temperature` 0.65, `repetition_penalty`, `top_p`, `top_k`: coqui's
`Xtts.inference` defaults), `temperature_sweep = []`, `short_test_sentence = ""` (added unless a test
sentence has at most 3 words; empty: one per language) and `reference_clips = "first"` (`"auto"`:
the held-out clips nearest the mean resemblyzer embedding of all held-out clips; or a list of wav
files, relative to the dataset folder or not) are parameters of `03_evaluation`.

The decision notebook also takes `experiments = []` (other experiments to compare side by side) and
`thresholds = {}` (overrides of the decision rules; unknown keys are an error listing the valid ones): among
them `similarity_margin` and `cer_margin` (0.02: speaker similarity, then CER, break a Mel CE tie
that the listening scores leave open when they differ by more) and `similarity_drop_alarm` and
`cer_rise_alarm` (0.05: a candidate that far below the base's similarity, or above its CER, is
flagged and cannot win on Mel CE alone).

`loss_text_ce` is recorded as the trainer logs it: already multiplied by
`gpt_loss_text_ce_weight` (0.01), the scale the Text CE thresholds (0.03 / 0.04) are written in.
"""


def _scraps_cell(stem: str, names: tuple[str, ...]) -> str:
    words = SCRAPS.get(stem, {})
    lacking = [n for n in names if n not in words]
    extra = [n for n in words if n not in names]
    if lacking or extra:
        raise KeyError(
            f"{stem}: scraps without words {lacking}, words for scraps not in the contract "
            f"{extra}: edit voicebook/stages_doc.py to match voicebook/stages.py."
        )
    return ", ".join(f"`{n}` {words[n]}".rstrip() for n in names)


def render() -> str:
    """The whole of docs/stages.md."""
    rows = []
    for s in STAGES:
        files = ", ".join(f"`{f}`" for f in s.files)
        writes = WRITES[s.stem].replace("|", "\\|")
        rows.append(
            f"| `{s.stem}` | {writes} (contract: {files}) | {_scraps_cell(s.stem, s.scraps)} |"
        )
    return INTRO + "\n".join(rows) + "\n" + OUTRO


def main(argv: list[str] | None = None) -> int:
    target = Path((argv or sys.argv[1:] or [str(DOC_PATH)])[0])
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

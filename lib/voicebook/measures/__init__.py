"""Measures shared by the stages that judge models: the evaluation (test split) and the
training stage's choice among checkpoints (validation split). Stage-independent: it imports
``coqui``, ``asr``, ``speaker`` and ``core`` only, so every stage may use it.

The entry points, in the order a judge uses them:

1. ``takes.sentence_table(sentences, stress)`` then ``takes.synthesize_takes(model, table,
   voice, out_dir, takes=3, seed=1, sampler=Sampler(...), language=...)``: every sentence
   spoken ``takes`` times, one row per take; the same seeds and the same ``voice`` (one
   conditioning) for every candidate make the takes paired. ``Sampler`` pins all five sampling
   settings (temperature, top_p, top_k, repetition_penalty, length_penalty).
2. ``scoring.TakeScorer(similarity, transcribe, mos, rate).score(takes)``: per take ``cer``,
   ``speaker_similarity``, ``mos`` (``quality.DistillMos``, load once), ``sec_per_char`` and
   ``rate_error`` (against ``scoring.speaker_rate(...)``), the failure flags ``runaway``,
   ``truncated``, ``skipped_or_repeated`` and ``failure`` (any).
3. ``paired.compare(table, candidate, against, metric)`` / ``paired.comparisons(takes, clips,
   candidates, against)``: paired bootstrap over sentences (takes kept together) or clips
   (``mel_ce``, ``text_ce`` from a per-clip table), seeded, with a verdict ``better`` /
   ``worse`` / ``indistinguishable`` by ``stats.verdict``: the interval must lie wholly beyond
   the metric's practical floor (``stats.PRACTICAL_FLOOR``).
   ``paired.beats(comparisons)``: the decision's "better overall" (better on one measure,
   worse on none).
4. ``paired.failure_rates(takes, FLAGS)``: failures per 100 takes with Wilson intervals
   (``stats.wilson_interval``).

Import the modules themselves (``from voicebook.measures import paired``): the package imports
none of them, so that a reader of results (the decision, the report) does not load torch and
coqui, which only ``takes`` needs.
"""

"""Sweeps: many experiments from one command on Ray Tune, compared in one report.

``voicebook sweep --name lr_grid -p phase1.lr 1e-6 2e-6 -p phase2.lr 5e-7 1e-6`` gives Tune a
grid (``param_space``); each trial is one experiment whose stage notebooks papermill runs as
``voicebook run`` does, while the trial reports its eval Mel CE / Text CE to Tune as
``curves.csv`` grows, so ASHA stops the trials that fall behind. Everything lives in one folder::

    outputs/<sweep>/
      sweep.json          what the sweep is (axes, listed trials, fixed parameters, stages)
      sweep_report.html   every trial side by side, and the trial the evidence favours
      tune/               Tune's experiment: its state (for a re-run) and each trial's results
      data_prep/          the shared experiment whose 00_data_prep builds the dataset once
      <trial>/            one experiment per trial (``voicebook run --experiment <trial>
                          --outputs-dir outputs/<sweep>`` re-runs a stage of it)

Modules: ``spec`` (what a sweep is), ``trial`` (one trial as a Tune trainable), ``tuner`` (Ray,
data prep once, the Tuner), ``report`` (the ResultGrid as a page), ``cli`` (the command).
"""

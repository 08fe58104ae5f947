"""Glue for the tutorial notebooks only: parameters -> Config, paths from the repository root, result files.

The notebooks under ``notebooks/`` share one block of parameters (``params/ci.yaml``, ``quick.yaml`` and
``full.yaml`` set only these, so one file serves every notebook without papermill warnings)::

    dataset, data_root, model, weights, image_size, calib_size, steps, batch_size, target, seed,
    max_new_runs, results_dir, figures_dir, progress

Their defaults are the quick CPU mode, and a student's run writes only to the git-ignored ``results/notebooks/``;
``make notebooks`` (params/quick.yaml) is the deliberate refresh of the committed ``data/`` and ``figures/``.
Reading falls back to the committed ``data/`` for any result file the run has not written (``readable_path``).
A notebook's set-up cell::

    from fcpts import notebook as nb

    config, data, paths = nb.setup(globals())

Relative paths are resolved from the repository root (found from the location of the ``fcpts`` package,
never the working directory), so a notebook behaves the same from JupyterLab, papermill and nbval.
Nothing here is part of the method; the method lives in the rest of the package. One module per concern:

* ``setup``: parameters, Config, data and paths, the environment, timing;
* ``tables``: the result files and the runner's tables (resumed, read back, with 95 % intervals);
* ``verdicts``: summaries over seeds and paired verdicts;
* ``figures``: every figure, drawn from the result files alone (``draw``);
* ``lab``: JupyterLab's post-save hook.
"""
from .session import (REFERENCE_DIR, SHARED_PARAMETERS, Session, Timer, describe, duration, environment,
                    fresh_calibration, load_model, make_config, mode_settings, readable_path, session, settings, repo_path, result_path, run_tag,
                    setup)
from .tables import (SWEEP_TARGETS, comparison, comparison_grid, describe_table, current_rows, history_frame, interval_pivot, read_comparison, read_dst,
                     read_learners, resume_comparison, save_json, save_table, with_intervals, working_table)
from .verdicts import (QUALITY_TABLES, RECIPE_DIR, RECIPE_START, fcpts_table, learner_summary, paired_verdicts,
                       recipe_table, schedule_verdicts, scored, training_summary, verdict_line)
from .figures import (DST_TARGETS, FIGURES, LEARNER_TARGETS, PUBLISHED_NUMBERS, RECIPE_LABELS, draw, figure_name,
                      kit_rows_for_published)
from .lab import refresh_git_after_save

__all__ = [
    # setup
    "REFERENCE_DIR", "SHARED_PARAMETERS", "Session", "Timer", "describe", "duration", "environment",
    "fresh_calibration", "load_model", "make_config", "mode_settings", "readable_path", "repo_path", "result_path",
    "run_tag", "session", "settings", "setup",
    # tables
    "SWEEP_TARGETS", "comparison", "comparison_grid", "describe_table", "current_rows", "history_frame", "interval_pivot", "read_comparison", "read_dst",
    "read_learners", "resume_comparison", "save_json", "save_table", "with_intervals", "working_table",
    # verdicts
    "QUALITY_TABLES", "RECIPE_DIR", "RECIPE_START", "fcpts_table", "learner_summary", "paired_verdicts",
    "recipe_table", "schedule_verdicts", "scored", "training_summary", "verdict_line",
    # figures
    "DST_TARGETS", "FIGURES", "LEARNER_TARGETS", "PUBLISHED_NUMBERS", "RECIPE_LABELS", "draw", "figure_name",
    "kit_rows_for_published",
    # lab
    "refresh_git_after_save",
]

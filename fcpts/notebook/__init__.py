"""Glue for the tutorial notebooks only: a mode -> Config, data and paths; result files; verdicts; figures.

A notebook's set-up cell::

    from fcpts import notebook as nb
    config, data, run = nb.setup(globals())

Its ``parameters`` cell declares ``mode`` (quick, ci, full or refresh: the settings file ``params/<mode>.yaml``)
and may set any key of that file to override it. The quick mode is the default, and a student's run writes only
to the git-ignored ``results/notebooks/``; ``make notebooks`` (mode refresh) is the deliberate refresh of the
committed ``data/`` and ``figures/``. Reading falls back to the committed ``data/`` for any result file the run has
not written (``readable_path``). Relative paths are resolved from the repository root, never the working
directory, so a notebook behaves the same from JupyterLab, papermill and nbval. Nothing here is part of the
method. One module per concern:

* ``session``: modes, Config, data and paths, the environment, timing;
* ``tables``: the result files and the runner's tables (resumed, read back, with 95 % intervals);
* ``verdicts``: summaries over seeds and paired verdicts;
* ``figures``: every figure, drawn from the result files alone (``draw``);
* ``lab``: JupyterLab's post-save hook.
"""
from .session import (REFERENCE_DIR, SHARED_PARAMETERS, Session, Timer, describe, duration, environment,
                      fresh_calibration, load_model, make_config, mode_settings, readable_path, repo_path,
                      result_path, run_tag, session, settings, setup)
from .tables import (SWEEP_TARGETS, comparison, comparison_grid, current_rows, describe_table, history_frame,
                     interval_pivot, read_comparison, read_dst, read_learners, resume_comparison, save_json,
                     save_table, with_intervals, working_table)
from .verdicts import (CONCLUSION_PAIRS, LONG95_LABELS, QUALITY_TABLES, RECIPE_DIR, RECIPE_START, adapted_table,
                       faithful_rows, fcpts_table, labelled_rows, long95_tables,
                       learner_summary, paired_table, paired_verdicts, pooled_cell, pooled_difference, pooled_table,
                       recipe_table, row_label, schedule_rows, schedule_verdicts, scored, steps_table, training_summary,
                       verdict_counts, verdict_line)
from ..paths import PUBLISHED_NUMBERS
from .figures import (DST_TARGETS, FIGURES, LEARNER_TARGETS, RECIPE_LABELS, draw, figure_name,
                      kit_rows_for_published)
from .lab import refresh_git_after_save

__all__ = [
    # session
    "REFERENCE_DIR", "SHARED_PARAMETERS", "Session", "Timer", "describe", "duration", "environment",
    "fresh_calibration", "load_model", "make_config", "mode_settings", "readable_path", "repo_path", "result_path",
    "run_tag", "session", "settings", "setup",
    # tables
    "SWEEP_TARGETS", "comparison", "comparison_grid", "current_rows", "describe_table", "history_frame",
    "interval_pivot", "read_comparison", "read_dst", "read_learners", "resume_comparison", "save_json", "save_table",
    "with_intervals", "working_table",
    # verdicts
    "CONCLUSION_PAIRS", "LONG95_LABELS", "QUALITY_TABLES", "RECIPE_DIR", "RECIPE_START", "adapted_table",
    "faithful_rows", "fcpts_table", "labelled_rows", "long95_tables",
    "learner_summary", "paired_table", "paired_verdicts", "pooled_cell", "pooled_difference", "pooled_table",
    "recipe_table", "row_label", "schedule_rows", "schedule_verdicts", "scored", "steps_table", "training_summary", "verdict_counts",
    "verdict_line",
    # figures
    "DST_TARGETS", "FIGURES", "LEARNER_TARGETS", "PUBLISHED_NUMBERS", "RECIPE_LABELS", "draw", "figure_name",
    "kit_rows_for_published",
    # lab
    "refresh_git_after_save",
]

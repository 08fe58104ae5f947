"""JupyterLab's post-save hook (``make lab`` passes ``fcpts.notebook.refresh_git_after_save``)."""
from __future__ import annotations

import os
import subprocess
from typing import Any


def refresh_git_after_save(model: Any = None, os_path: str | None = None, contents_manager: Any = None,
                           **kwargs: Any) -> None:
    """JupyterLab post-save hook (``make lab`` sets it): keep ``git status`` honest for saved notebooks.

    Through the nbstripout filter (``make setup``) a tracked notebook saved with new outputs only is unchanged,
    yet git's index still holds the old file size, and git takes a size change for a modification without
    running the filter: ``git status`` says modified (and ``git pull`` refuses) while ``git diff`` is empty.
    When the filtered file equals the index, re-adding it stages nothing and refreshes that entry."""
    if not os_path or not os_path.endswith(".ipynb"):
        return
    folder = os.path.dirname(os_path) or "."

    def git(*args: str) -> int:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True).returncode

    try:  # never fail a save: no git, or not a checkout, leaves the index alone
        if git("ls-files", "--error-unmatch", "--", os_path) == 0 and git("diff", "--quiet", "--", os_path) == 0:
            git("add", "--", os_path)
    except OSError:
        return

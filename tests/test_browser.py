"""Notebook 01 in JupyterLab, in a real headless Chromium, as a student runs it: open, Run All, wait.

It checks what a student would see and what they would leave behind:

* every cell ran, none has an error output, every figure cell rendered an image, the summary printed;
* saving the executed notebook (JupyterLab with jupytext writes the .ipynb and its .py pair) changes
  nothing git would commit: the .py is byte-identical, the .ipynb through the nbstripout filter that
  `make setup` installs equals the committed one, and with `make lab`'s save hook `git status` stays clean;
* the run used the notebook's defaults, and the repository's `git status` is the same before and after.

The notebook runs from a copy (the pair and jupytext.toml, committed in a temporary git checkout with the
Makefile's git filter) so the repository's files are never written; its results go where the defaults send them (results/notebooks/, git-ignored). A screenshot
of the first figures is saved under build/browser/.

Needs Chromium (Debian's `chromium`; .ci/run installs it) and the Playwright Python package (dev extra), which
drives that binary through ``executable_path``: no browser is downloaded. Skips with a message without them.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_theory_bridge_function"
SHOTS = REPO / "build" / "browser"
LAB_HOOK = "--FileContentsManager.post_save_hook=fcpts.notebook.refresh_git_after_save"  # as `make lab`
RUN_TIMEOUT_S = 900  # notebook 01 with its defaults: about a minute on 2 cores, longer under load

pytestmark = pytest.mark.slow


def find_chromium() -> str | None:
    for candidate in (os.environ.get("FCPTS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (shutil.which(candidate) or Path(candidate).is_file()):
            return shutil.which(candidate) or candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


def stripped(path: Path) -> dict:
    """The notebook as the git filter stores it (nbstripout's text conversion)."""
    from test_notebooks_hygiene import nbstripout_extra_keys

    out = subprocess.run([sys.executable, "-m", "nbstripout", "-t", "--extra-keys", nbstripout_extra_keys(), str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def requirements() -> tuple[str, object]:
    """(the Chromium binary, playwright.sync_api), or a skip that says what is missing and how to get it."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found: install Debian's package (`apt-get install chromium`, as .ci/run does) or "
                    "set FCPTS_CHROMIUM to a Chromium or Chrome binary")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Playwright package is missing: `make setup`")
    for tool in ("git", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"the browser test needs {tool} on the PATH")
    if subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: the test compares `git status` before and after the run")
    return chromium, sync_api


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a free local port over a copy of notebook 01's pair; yields (url base, token, folder,
    chromium, playwright.sync_api). Skips first when a requirement is missing."""
    chromium, sync_api = requirements()
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in (f"{NOTEBOOK}.ipynb", f"{NOTEBOOK}.py", "jupytext.toml"):
        shutil.copy2(REPO / "notebooks" / name, folder / name)
    # the copy is a checkout of its own, with the filter `make setup` installs (the Makefile's own target)
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "notebook 01 as committed"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=tmp_path, check=True)
    make_env = {k: v for k, v in os.environ.items() if k != "CONDA_PREFIX"}
    subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "git-filter"], cwd=tmp_path, check=True,
                   env=dict(make_env, VIRTUAL_ENV=sys.prefix))
    # the settings `make lab` installs (params/jupyterlab.json), here as this server's user settings
    for plugin, values in json.loads((REPO / "params" / "jupyterlab.json").read_text()).items():
        package, name = plugin.split(":")
        target = tmp_path / "settings" / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
               "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
               f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--ServerApp.port_retries=0", LAB_HOOK,
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]  # no news pop-up over the figures
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not answer in 120 s:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield base, token, folder, chromium, sync_api
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# In the page: the open notebook's state, read from JupyterLab's own model (exposed by expose_app_in_browser).
STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext || !panel.sessionContext.session) return null;
  const cells = panel.content.model.toJSON().cells;
  const code = cells.filter(c => c.cell_type === 'code');
  return {
    kernel: panel.sessionContext.session.kernel ? panel.sessionContext.session.kernel.status : 'none',
    code: code.length,
    done: code.filter(c => c.execution_count !== null).length,
    errors: code.filter(c => (c.outputs || []).some(o => o.output_type === 'error')).length,
  };
}"""


def test_notebook_01_runs_in_jupyterlab_in_chromium(lab):
    base, token, folder, chromium, sync_api = lab
    status_before = git_status()
    committed_py = (REPO / "notebooks" / f"{NOTEBOOK}.py").read_text()
    started = time.time()

    args = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{base}/lab/tree/notebooks/{NOTEBOOK}.ipynb?token={token}", timeout=120_000)
            # the app, the notebook and its kernel are up when the state reads an idle kernel
            page.wait_for_function(f"() => {{ try {{ const s = ({STATE_JS})(); return s && s.kernel === 'idle'; }}"
                                   " catch (e) { return false; } }", timeout=180_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            deadline = time.monotonic() + RUN_TIMEOUT_S
            state = page.evaluate(STATE_JS)
            while not (state["done"] == state["code"] and state["kernel"] == "idle") and not state["errors"]:
                assert time.monotonic() < deadline, f"Run All did not finish in {RUN_TIMEOUT_S} s: {state}"
                time.sleep(2)
                state = page.evaluate(STATE_JS)
            notebook = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.model.toJSON()")
            news_prompts = page.get_by_text("Jupyter news").count()  # JupyterLab's opt-in toast, over the notebook

            # what the student sees
            SHOTS.mkdir(parents=True, exist_ok=True)
            images = page.locator(".jp-RenderedImage img")
            if images.count():
                images.first.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / f"{NOTEBOOK}.png"))
            for k in range(min(images.count(), 4)):
                images.nth(k).screenshot(path=str(SHOTS / f"{NOTEBOOK}_figure{k + 1}.png"))
            rendered_images = images.count()

            # save as a student would (Ctrl+S): JupyterLab with jupytext writes the .ipynb and the .py
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
                                   timeout=60_000)
        finally:
            browser.close()
    seconds = time.time() - started

    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(code) for o in c["outputs"]
              if o["output_type"] == "error"]
    assert not errors, f"error outputs in the browser: {errors}"
    assert news_prompts == 0, "JupyterLab's news prompt covers the notebook: params/jupyterlab.json did not apply"
    assert all(c["execution_count"] is not None for c in code), "some cells did not run"
    figure_cells = [c for c in code if "nb.draw(" in "".join(c["source"])]
    assert figure_cells, "notebook 01 has no figure cells to check"
    for c in figure_cells:
        shown = [o for o in c["outputs"] if "image/png" in o.get("data", {})]
        assert shown, f"no figure rendered by {''.join(c['source'])[:80]!r}"
    assert rendered_images >= sum(sum("image/png" in o.get("data", {}) for o in c["outputs"]) for c in figure_cells)
    printed = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for c in code for o in c["outputs"] if o["output_type"] == "stream")
    assert "exact: True" in printed, "the summary (exact projection) was not printed"

    # the defaults wrote to the git-ignored results/notebooks/, and nothing committed changed
    written = REPO / "results" / "notebooks" / "bridge_resnet50_digits.csv"
    assert written.exists() and written.stat().st_mtime >= started - 1, "the run did not write results/notebooks/"
    assert git_status() == status_before, "running notebook 01 with its defaults changed the checkout"
    saved = folder / f"{NOTEBOOK}.ipynb"
    assert any(c.get("outputs") for c in json.loads(saved.read_text())["cells"]), "the save wrote no outputs"
    assert stripped(saved) == stripped(REPO / "notebooks" / f"{NOTEBOOK}.ipynb"), \
        "the saved notebook differs from the committed one after the nbstripout filter"
    assert (folder / f"{NOTEBOOK}.py").read_text() == committed_py, "saving rewrote the .py source"
    copy_status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder.parent,
                                 capture_output=True, text=True, check=True).stdout
    assert copy_status == "", f"the saved, executed notebook shows as a change in its checkout:\n{copy_status}"
    print(f"\n[browser] notebook 01 Run All + save in JupyterLab/Chromium: {seconds:.0f} s; screenshots in {SHOTS}")

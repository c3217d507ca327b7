"""End to end in a real browser, as a user meets the explorer: JupyterLab started on a free loopback port with a
token, notebook 06 opened on the smoke profile, Run ▸ Run All Cells, the γ slider dragged with the mouse; the
displayed accuracy and parameter count must change to what the explorer computes for the new γ, and screenshots
are saved to results/browser/.

Needs Debian's chromium (/usr/bin/chromium), Playwright for Python (its driver, no browser download) and
JupyterLab: `make test-browser` installs them. Where they are missing the test is skipped with the reason, unless
KIT_REQUIRE_BROWSER=1 (set by `make test-browser` and .ci/run), where that is a failure.
"""
import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from kit import config as C
from kit import explorer as E
from kit.runtime import PROJECT_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.notebook]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PROJECT_ROOT / "results" / "browser"
# as root, in a machine without a network: no sandbox, no GPU, no background connections (they are refused)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _require() -> None:
    missing = [what for what, ok in (
        ("Debian's chromium at /usr/bin/chromium (apt-get install chromium)", CHROMIUM.is_file()),
        ("Playwright for Python (pip install -e '.[dev]')", importlib.util.find_spec("playwright") is not None),
        ("JupyterLab (pip install -e .)", importlib.util.find_spec("jupyterlab") is not None)) if not ok]
    if missing:
        message = "The browser test needs " + " and ".join(missing) + "; `make test-browser` installs them."
        pytest.fail(message) if os.environ.get("KIT_REQUIRE_BROWSER") == "1" else pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_on(folder: Path, parameters: dict) -> Path:
    """Notebook 06 with its parameters cell edited as a user would: NAME = value lines replaced."""
    nb = nbformat.read(PROJECT_ROOT / "notebooks" / "06_gamma_explorer.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split("=")[0].strip()
        lines.append(f"{name} = {parameters[name]!r}" if name in parameters else line)
    cell.source = "\n".join(lines)
    path = folder / "06_gamma_explorer.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def lab(tmp_path, smoke_run):
    """(base URL, token, notebook output folder): JupyterLab serving a smoke copy of notebook 06."""
    _require()
    root, out = tmp_path / "lab", tmp_path / "out"
    root.mkdir()
    _notebook_on(root, {"PROFILE": "smoke", "RUN_DIR": str(smoke_run[0]), "OUT_DIR": str(out)})
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')  # render every cell
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'ws'}",
         *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else [])],  # CI runs as root
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, token, out
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_notebook_06_in_jupyterlab_moves_with_the_gamma_slider(lab, smoke_run):
    from playwright.sync_api import sync_playwright
    base, token, out = lab
    oracle = E.Explorer(E.default_checkpoint(smoke_run[0]), C.build(C.ExplorerConfig, "smoke"))  # what 06 opens
    own = oracle.checkpoint.parent.name  # the panel's default method: the checkpoint's own (the pre-fit recipe)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(f"{base}/lab/tree/06_gamma_explorer.ipynb?token={token}")
        try:
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=120_000)  # kernel ready
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator("li.lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()
            deadline = time.time() + 300  # every cell has run once the record cell has written metrics.json
            while not (out / "metrics.json").is_file():
                assert time.time() < deadline, "notebook 06 did not finish within 5 minutes in JupyterLab"
                assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                        has_text="Traceback").count(), "a cell failed in JupyterLab"
                page.wait_for_timeout(1000)
        except BaseException:
            page.screenshot(path=str(SCREENSHOTS / "06_failure.png"))  # what the browser showed, for the log
            raise
        panel = page.locator(".kit-explorer").first
        panel.scroll_into_view_if_needed()
        accuracy, parameters = panel.locator(".kit-accuracy"), panel.locator(".kit-parameters")
        accuracy.wait_for(timeout=60_000)
        before = accuracy.inner_text(), parameters.inner_text()
        panel.screenshot(path=str(SCREENSHOTS / "06_gamma_explorer_before.png"))

        # drag the γ handle to the end of the track where the explorer says the accuracy differs from the default
        k = min(oracle.methods[own].k, oracle.cfg.k_max)  # the panel's defaults: the checkpoint's K, γ mid-pool
        lo, hi = oracle.gamma_range()
        default = oracle.view(E.Settings(own, lo + round((max(oracle.pool) / 2 - lo) / oracle.step) * oracle.step, k))
        ends = {g: oracle.view(E.Settings(own, g, k)) for g in (hi, lo)}
        target = next((g for g, v in ends.items() if v.accuracy != default.accuracy), None)
        assert target is not None, "the smoke network's accuracy is the same at both ends of γ: nothing to see change"
        handle = panel.locator(".kit-gamma .noUi-handle")
        track = panel.locator(".kit-gamma .noUi-target").bounding_box()
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        end_x = track["x"] + track["width"] + 40 if target == hi else track["x"] - 40  # past the end: clamps
        page.mouse.move(end_x, box["y"] + box["height"] / 2, steps=12)
        page.mouse.up()
        expected = ends[target]
        deadline = time.time() + 60
        while (accuracy.inner_text(), parameters.inner_text()) == before:
            assert time.time() < deadline, "the readout did not change after moving the γ slider"
            page.wait_for_timeout(250)
        page.wait_for_function("([a, p]) => document.querySelector('.kit-explorer .kit-accuracy').innerText === a && "
                               "document.querySelector('.kit-explorer .kit-parameters').innerText === p",
                               arg=[f"{100 * expected.accuracy:.1f}%", f"{expected.parameters:,}"], timeout=60_000)
        after = accuracy.inner_text(), parameters.inner_text()
        shot = SCREENSHOTS / "06_gamma_explorer.png"
        panel.screenshot(path=str(shot))
        browser.close()
    assert after[0] != before[0] and after[1] != before[1]
    assert after == (f"{100 * expected.accuracy:.1f}%", f"{expected.parameters:,}")  # what the explorer computes
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}  (γ {default.settings.gamma} → {target}: accuracy {before[0]} → {after[0]}, "
          f"parameters {before[1]} → {after[1]})")

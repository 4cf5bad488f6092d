"""The labs as a student meets them: in a real JupyterLab, driven through headless Chromium.

- The FGSM lab is opened in JupyterLab and run top to bottom from the browser ("Run All Cells");
  no cell may show an error, and moving the epsilon slider must redraw the picture.
- Every lab's executed copy from this test run (``build/test-labs/``, see ``conftest.py``) is
  opened in JupyterLab: its images are shown, every table is an HTML table (a broken Markdown
  table renders as a paragraph of ``|`` characters) and no cell shows an error.
- A screenshot of each lab is kept under ``build/screenshots/``.

Chromium is Debian's (``/usr/bin/chromium``, or ``$ADVKIT_CHROMIUM``), driven by Playwright
through ``executable_path``: Playwright's own browser download needs the internet. ``.ci/run``
installs both. Without them the tests skip locally and fail in CI.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from test_rendered_labs import LABS, executed_copy

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("ADVKIT_CHROMIUM", "/usr/bin/chromium")
# As root in a container Chromium needs --no-sandbox; the background-networking flags stop it
# calling home on a closed network (every refused connection slows the start).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
FGSM_LAB = ROOT / "labs" / "01_fgsm.ipynb"
RUN_ALL_TIMEOUT_S = 600


def _need(what: str, ok: bool) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: .ci/run must install it")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need("the Python package playwright", sync_playwright is not None)
    _need(f"Chromium at {CHROMIUM}", Path(CHROMIUM).is_file())
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """A JupyterLab server on localhost over a scratch folder: ``(base_url, token, root)``."""
    root = tmp_path_factory.mktemp("jupyterlab")
    work, settings = root / "notebooks", root / "settings"
    work.mkdir()
    # Render every cell (JupyterLab 4 only renders the cells in view by default), and no news popups.
    for name, value in {"notebook-extension/tracker": {"windowingMode": "none"},
                        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = settings / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "ADVKIT_RECORDS": str(root / "records"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}", f"--LabApp.workspaces_dir={root / 'ws'}",
           "--LabApp.expose_app_in_browser=True"]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not start in 120 s")
        yield base, token, work
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _open(browser, base: str, token: str, relpath: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # a workspace of its own, reset: JupyterLab would otherwise reopen the notebooks of earlier pages
    workspace = re.sub(r"\W", "-", relpath)
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{relpath}?token={token}&reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.context"
                           " && window.jupyterapp.shell.currentWidget.context.isReady", timeout=120_000)
    return page


def _error_texts(page) -> list[str]:
    """Texts of the error outputs JupyterLab shows (tracebacks render as stderr with an ename)."""
    return page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "els => els.map(e => e.innerText).filter(t => /Traceback|Error:|Exception/.test(t))")


def _pipe_paragraphs(page) -> list[str]:
    """Paragraphs that look like a Markdown table that failed to render (rows of ``|``)."""
    texts = page.eval_on_selector_all(
        ".jp-RenderedMarkdown p, .jp-RenderedHTMLCommon p",
        # typeset math and code spans may hold pipes of their own (|x|, a|b): leave them out
        "els => els.map(e => { const c = e.cloneNode(true);"
        " c.querySelectorAll('mjx-container, .MathJax, mjx-assistive-mml, script, code').forEach(m => m.remove());"
        " return c.textContent; })")
    return [t for t in texts if re.search(r"\|\s*:?-{3,}", t) or t.count("|") >= 4]


def _wait_rendered(page, nb) -> None:
    """Wait until every Markdown cell is rendered, its math typeset, and every output shown."""
    n_md = sum(c.cell_type == "markdown" for c in nb.cells)
    n_out = sum(len(c.get("outputs", [])) for c in nb.cells if c.cell_type == "code")
    math = any("$" in c.source for c in nb.cells if c.cell_type == "markdown")
    page.wait_for_function(
        """([nMd, nOut, math]) => {
             const panel = document.querySelector('.jp-NotebookPanel');
             return panel.querySelectorAll('.jp-MarkdownCell .jp-RenderedMarkdown').length >= nMd &&
                    panel.querySelectorAll('.jp-OutputArea-output').length >= nOut &&
                    (!math || panel.querySelectorAll('mjx-container').length > 0); }""",
        arg=[n_md, n_out, math], timeout=120_000)


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def test_fgsm_lab_runs_in_jupyterlab_and_its_slider_redraws(browser, lab_server):
    base, token, work = lab_server
    shutil.copy(FGSM_LAB, work / FGSM_LAB.name)
    page = _open(browser, base, token, FGSM_LAB.name)
    try:
        page.wait_for_function("() => { const k = window.jupyterapp.shell.currentWidget.sessionContext;"
                               " return k.session && k.session.kernel && k.session.kernel.status === 'idle'; }",
                               timeout=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        n_code = sum(c.cell_type == "code" for c in nbformat.read(str(FGSM_LAB), as_version=4).cells)
        # done when every code cell has an execution count and the kernel is idle again
        page.wait_for_function(
            """n => { const w = window.jupyterapp.shell.currentWidget;
                      const cells = w.content.widgets.filter(c => c.model.type === 'code');
                      const done = cells.filter(c => c.model.executionCount !== null).length;
                      const busy = w.content.node.querySelectorAll('.jp-InputArea-prompt').length > 0 &&
                                   [...w.content.node.querySelectorAll('.jp-InputArea-prompt')].some(p => p.innerText.includes('*'));
                      return cells.length === n && done === n && !busy &&
                             w.sessionContext.session.kernel.status === 'idle'; }""",
            arg=n_code, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
        errors = _error_texts(page)
        assert not errors, f"cells show errors in JupyterLab: {errors[:3]}"

        # the epsilon slider (ipywidgets, noUiSlider): drag its handle, the picture must change
        handle = page.locator(".widget-slider .noUi-handle").last
        handle.scroll_into_view_if_needed()
        widget = page.locator(".widget-vbox").filter(has=page.locator(".widget-slider")).last
        img = widget.locator("img").first
        img.wait_for(timeout=60_000)
        before_src = img.get_attribute("src")
        readout = widget.locator(".widget-readout").first
        before_eps = readout.inner_text()
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()
        page.wait_for_function("([el, old]) => el.innerText !== old", arg=[readout.element_handle(), before_eps],
                               timeout=10_000)
        page.wait_for_function("([el, old]) => { const i = el.querySelector('img'); return i && i.src !== old &&"
                               " i.complete && i.naturalWidth > 0; }",
                               arg=[widget.element_handle(), before_src], timeout=120_000)
        assert float(readout.inner_text()) > float(before_eps)
        _shot(page, "01_fgsm-live")
    finally:
        page.close()


@pytest.mark.parametrize("lab", LABS, ids=[p.stem for p in LABS])
def test_executed_lab_renders_in_jupyterlab(lab, browser, lab_server, tmp_path):
    base, token, work = lab_server
    nb = executed_copy(lab, tmp_path)
    rel = f"executed/{lab.name}"
    (work / "executed").mkdir(exist_ok=True)
    nbformat.write(nb, str(work / rel))
    want_images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if "image/png" in o.get("data", {}))
    want_tables = sum(o.get("data", {}).get("text/html", "").count("<table") for c in nb.cells
                      if c.cell_type == "code" for o in c.get("outputs", []))
    page = _open(browser, base, token, rel)
    try:
        _wait_rendered(page, nb)
        page.wait_for_function(
            "n => [...document.querySelectorAll('.jp-NotebookPanel .jp-RenderedImage img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length >= n", arg=want_images, timeout=60_000)
        assert want_images > 0, f"{lab.stem}: the executed copy holds no picture"
        tables = page.locator(".jp-NotebookPanel .jp-OutputArea-output table").count()
        assert tables >= want_tables >= 1, f"{lab.stem}: {tables} HTML tables shown, {want_tables} in the outputs"
        assert not _pipe_paragraphs(page), f"{lab.stem}: Markdown tables shown as text: {_pipe_paragraphs(page)[:2]}"
        assert not _error_texts(page), f"{lab.stem}: errors shown: {_error_texts(page)[:2]}"
        page.locator(".jp-NotebookPanel .jp-OutputArea-output table").last.scroll_into_view_if_needed()
        _shot(page, lab.stem)  # at the lab's final table
    finally:
        page.close()


def test_the_browser_checks_catch_a_broken_table_and_an_error(browser, lab_server):
    """The checks above can fail: lab 01's old ``max |δ|`` header and a traceback are caught."""
    base, token, work = lab_server
    nb = nbformat.v4.new_notebook()
    err = nbformat.v4.new_output("error", ename="ValueError", evalue="boom",
                                 traceback=["Traceback (most recent call last):", "ValueError: boom"])
    nb.cells = [nbformat.v4.new_markdown_cell("| eps | max |δ| |\n|---|---|\n| 0.1 | 0.1 |\n\nnorm $\\|x\\|_2$ of `a|b`"),
                nbformat.v4.new_code_cell("raise ValueError('boom')", outputs=[err])]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(work / "broken.ipynb"))
    page = _open(browser, base, token, "broken.ipynb")
    try:
        _wait_rendered(page, nb)
        assert len(_pipe_paragraphs(page)) == 1  # the broken table; the math and the code span are not flagged
        assert any("ValueError" in t for t in _error_texts(page))
    finally:
        page.close()

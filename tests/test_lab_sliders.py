"""The live ω sliders where they live: notebook 03 in a running JupyterLab, driven in headless Chromium, on its
embedded dataset world_shapes (world_tint, the contrast, is only in its side-by-side section).

JupyterLab is started on 127.0.0.1 with a token in a temporary folder holding a copy of notebook 03 (quick mode);
the test opens it, runs all cells, drags the ω_b slider with the mouse, types an ω_n value into the other slider's
read-out, and checks that the text under the sliders is :func:`dpclab.lab.widgets.omega_summary` (i.e.
:func:`dpclab.omega.omega_view`) of the grid the notebook saved, for the values the sliders show. Screenshots are
kept in the test's temporary folder (and copied to ``$DPCLAB_SCREENSHOTS`` when set).

Timeouts are generous: JupyterLab's start-up took 31-207 s on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_omega_sliders.ipynb"
SCREENSHOT_DIR = os.environ.get("DPCLAB_SCREENSHOTS")
LAB_START_S = 300  # JupyterLab answering on its port
CELLS_S = 600  # all cells of notebook 03 in quick mode (training included) on a loaded machine
UI_MS = 120_000  # one page element to appear


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quick_copy(folder: Path) -> Path:
    """Notebook 03 with ``quick = True`` in its parameters cell (everything else as committed)."""
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert re.search(r"^quick = False\b", params.source, re.M), params.source
    params.source = re.sub(r"^quick = False\b", "quick = True ", params.source, flags=re.M)
    path = folder / NOTEBOOK.name
    nbformat.write(nb, str(path))
    return path


class Lab:
    """``jupyter lab`` on 127.0.0.1 with a token, every Jupyter folder inside ``folder`` (nothing of the user's)."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.token = folder, _free_port(), secrets.token_hex(16)
        self.log = folder / "jupyter-lab.log"

    def __enter__(self) -> "Lab":
        home = self.folder / ".jupyter-home"
        config = home / "config"
        (config / "labconfig").mkdir(parents=True)
        # no news / update pop-ups over the notebook
        (config / "labconfig" / "page_config.json").write_text(
            '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "PYTHONPATH": os.pathsep.join(
                   p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.folder}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + LAB_START_S
        from urllib.request import urlopen

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urlopen(f"{self.url('api/status')}", timeout=10) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer in {LAB_START_S} s: {self.log.read_text()[-2000:]}")
            time.sleep(1)
        self.started_s = LAB_START_S - (deadline - time.monotonic())
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def __exit__(self, *exc) -> None:
        self.proc.terminate()  # jupyter server shuts its kernels down on SIGTERM
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _slider(page, label: str):
    """The ipywidgets FloatSlider whose description is ``label``."""
    return page.locator(".widget-slider", has=page.locator(".widget-label", has_text=label)).first


def _drag_to(page, slider, value: float, lo: float, hi: float) -> None:
    """Drag the slider's handle with the mouse to the track position of ``value``."""
    handle = slider.locator(".noUi-handle").first
    handle.hover()  # scrolled into view, and stable: outputs above it may still be moving the page
    track = slider.locator(".noUi-target").first.bounding_box()
    start = handle.bounding_box()
    x0, y0 = start["x"] + start["width"] / 2, start["y"] + start["height"] / 2
    x1 = track["x"] + track["width"] * (value - lo) / (hi - lo)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y0, steps=12)
    page.mouse.up()


def _shot(page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    if SCREENSHOT_DIR:
        shutil.copy(path, Path(SCREENSHOT_DIR) / path.name)


def test_live_omega_sliders_in_jupyterlab(tmp_path):
    from dpclab.omega import OmegaGrid, omega_view
    from dpclab.lab.widgets import omega_summary

    reason = browser.skip_reason()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("jupyterlab")
    book = _quick_copy(tmp_path)
    t0 = time.monotonic()
    with Lab(tmp_path) as lab, browser.chromium_page(1400, 1000, timeout_ms=UI_MS) as page:
        page.goto(lab.url(f"lab/tree/{book.name}"))
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell", timeout=UI_MS)
        page.locator(".jp-Notebook").first.wait_for()
        # a first start may ask which kernel: accept the proposed one (Python 3)
        select = page.locator(".jp-Dialog .jp-mod-accept")
        try:
            select.wait_for(timeout=15_000)
            select.click()
        except Exception:  # noqa: BLE001 - no dialog: the notebook's own kernel started
            pass
        page.wait_for_function("(() => { const w = window.jupyterapp.shell.currentWidget;"
                               " return w && w.sessionContext && w.sessionContext.session &&"
                               " w.sessionContext.session.kernel; })()", timeout=UI_MS)
        _shot(page, tmp_path, "lab_1_opened")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        sliders = [_slider(page, "ω_b"), _slider(page, "ω_n")]
        sliders[0].wait_for(timeout=CELLS_S * 1000)
        readout = page.locator(".widget-output", has_text="→ base").first
        readout.wait_for(timeout=UI_MS)
        # the cells after the sliders (the side-by-side trains its runs) must finish first: until then the kernel
        # is busy (a slider's callback waits) and their outputs move the sliders under the mouse
        page.wait_for_function("() => { const p = [...document.querySelectorAll('.jp-InputPrompt')];"
                               " return p.length > 0 && !p.some(e => e.innerText.includes('*')); }",
                               timeout=CELLS_S * 1000)
        sliders[0].scroll_into_view_if_needed()
        _shot(page, tmp_path, "lab_2_sliders")

        # the sliders read the grid of the notebook's own dataset, world_shapes (where P′ changes base accuracy);
        # the side-by-side section builds world_tint's too, the contrast: the read-out must be world_shapes' own
        from dpclab.lab.plan import DPC_SIDE_BY_SIDE, EMBEDDED_NOTEBOOK_DATASETS
        (dataset,) = EMBEDDED_NOTEBOOK_DATASETS["03"]
        assert dataset == "world_shapes" and set(DPC_SIDE_BY_SIDE) == {"world_shapes", "world_tint"}
        grids = {d: sorted(tmp_path.glob(f"runs/*/{d}/coop+dpc/*/omega_grid_*.pt")) for d in DPC_SIDE_BY_SIDE}
        assert all(len(g) == 1 for g in grids.values()), grids
        grid, contrast = (OmegaGrid.load(grids[d][0]) for d in ("world_shapes", "world_tint"))
        lo, hi = float(grid.omegas[0]), float(grid.omegas[-1])

        def shown() -> str:
            return " ".join(readout.inner_text().split())

        def expected(wb: float, wn: float) -> str:
            return omega_summary(grid, wb, wn).replace("**", "")

        assert shown() == expected(*grid.meta["default"])  # the read-out before anything moves
        # drag ω_b to 0.80 with the mouse
        _drag_to(page, sliders[0], 0.8, lo, hi)
        page.wait_for_function("t => document.body.innerText.includes(t)", arg="ω_b = 0.80,")
        assert sliders[0].locator(".widget-readout").inner_text().strip() == "0.80"
        # set ω_n by typing into its read-out (ipywidgets' editable read-out): the grid value whose new-class
        # accuracy differs most from the default's, so a read-out that did not follow the slider cannot pass
        new = grid.accuracy["new"].tolist()
        default_new = new[grid.index(grid.meta["default"][1])]
        wn = float(grid.omegas[max(range(len(new)), key=lambda i: (abs(new[i] - default_new), -i))])
        assert abs(omega_view(grid, 0.8, wn)["new"] - default_new) > 0.5, new
        field = sliders[1].locator(".widget-readout")
        field.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(f"{wn:.2f}")
        page.keyboard.press("Enter")
        page.wait_for_function("t => document.body.innerText.includes(t)", arg=f"ω_n = {wn:.2f} →")
        assert shown() == expected(0.8, wn), (shown(), expected(0.8, wn))
        assert shown() != omega_summary(contrast, 0.8, wn).replace("**", "")  # not world_tint's grid
        _shot(page, tmp_path, "lab_3_moved")
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert "Traceback" not in " ".join(errors.all_inner_texts())
    print(f"JupyterLab started in {lab.started_s:.0f} s; the whole test took {time.monotonic() - t0:.0f} s; "
          f"screenshots in {tmp_path}")

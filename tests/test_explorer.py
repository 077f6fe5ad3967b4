"""The static ω explorer: its numbers are the grid's, and in a real browser (headless system Chromium, driven by
Playwright) its sliders work in the HTML report that ``python -m dpclab report`` writes, with no kernel."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import torch

from dpclab.evaluate import harmonic_mean
from dpclab.lab.explorer import explorer_data, omega_explorer, omega_explorer_html
from dpclab.omega import OmegaGrid, omega_view

import browser

SCREENSHOT_DIR = os.environ.get("DPCLAB_SCREENSHOTS")  # keep the browser tests' screenshots there when set


def _grid() -> OmegaGrid:
    # irregular accuracies, so a lookup at the wrong index or of the wrong split cannot pass
    omegas = [0.0, 0.25, 0.5, 0.75, 1.0]
    base = torch.tensor([61.25, 70.5, 72.125, 68.0, 66.75], dtype=torch.float64)
    new = torch.tensor([55.5, 51.0, 47.375, 44.25, 40.0], dtype=torch.float64)
    return OmegaGrid(omegas=omegas, accuracy={"base": base, "new": new}, labels={}, meta={"default": [0.25, 0.0]})


def test_explorer_numbers_are_the_grids_read_outs():
    grid = _grid()
    data = explorer_data(grid)
    assert data["omegas"] == ["0.00", "0.25", "0.50", "0.75", "1.00"] and data["default"] == [1, 0]
    for i, wb in enumerate(grid.omegas):
        for j, wn in enumerate(grid.omegas):
            view = omega_view(grid, wb, wn)
            assert data["base"][i] == f"{view['base']:.2f}" and data["new"][j] == f"{view['new']:.2f}"
            assert data["hm"][i][j] == f"{harmonic_mean(view['base'], view['new']):.2f}"
    assert data["base"][2] == "72.12"  # Python's rounding, done once in Python (the browser only looks up)


def test_explorer_html_is_self_contained_and_shows_the_default_without_script():
    grid = _grid()
    page = omega_explorer_html(grid)
    payload = re.search(r'<script type="application/json" class="dpc-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(payload) == explorer_data(grid)
    assert "http" not in page and "<link" not in page and " src=" not in page  # nothing fetched from anywhere
    # before any script runs the read-outs show the default (ω_b = 0.25, ω_n = 0)
    assert 'data-key="omega_b">0.25<' in page and 'data-key="base">70.50<' in page and 'data-key="new">55.50<' in page
    assert page == omega_explorer_html(grid)  # deterministic: reports are reproducible byte for byte
    assert omega_explorer(grid)._repr_html_() == page
    # a class name or title holding "</script>" cannot end the data block early
    assert "</script>" not in omega_explorer_html(grid, title="</script><b>x").split("dpc-data\">")[1].split(
        "</script>")[0]


# ------------------------------------------------------------------------------------------ in a real browser
def _explorer_report(tmp_path: Path) -> Path:
    """A notebook that shows the explorer the way notebook 03 does, run headless by the report runner."""
    from nbformat.v4 import new_code_cell, new_notebook

    from dpclab.lab.parameters import PARAMETER_KEYS
    from dpclab.lab.report.run import run_notebook

    _grid().save(tmp_path / "grid.pt")
    params = new_code_cell("\n".join(f"{k} = None" for k in PARAMETER_KEYS))
    params.metadata["tags"] = ["parameters"]
    show = new_code_cell("from IPython.display import display\nfrom dpclab.lab.explorer import omega_explorer\n"
                         "from dpclab.omega import OmegaGrid\n"
                         f"display(omega_explorer(OmegaGrid.load({str(tmp_path / 'grid.pt')!r})))")
    nb = new_notebook(cells=[params, show], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                     "language": "python"}})
    (tmp_path / "books").mkdir()
    nbformat.write(nb, str(tmp_path / "books" / "explorer.ipynb"))
    res = run_notebook(tmp_path / "books" / "explorer.ipynb", tmp_path / "reports", {"interactive": False},
                       cwd=tmp_path)
    assert res.ok, res.error
    return res.html


def _shown(page) -> dict:
    return page.evaluate("Object.fromEntries([...document.querySelectorAll('.dpc-omega-explorer [data-key]')]"
                         ".map(e => [e.dataset.key, e.textContent]))")


def _center(page, selector: str) -> tuple[float, float, float]:
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"]


def test_static_explorer_sliders_work_in_the_html_report(tmp_path):
    grid = _grid()
    data = explorer_data(grid)
    report = _explorer_report(tmp_path)
    with browser.chromium_page() as page:
        page.goto(report.resolve().as_uri())
        page.wait_for_function("document.querySelector('.dpc-omega-explorer') && "
                               "document.querySelector('.dpc-omega-explorer').dataset.ready")
        assert _shown(page) == {"omega_b": "0.25", "omega_n": "0.00", "base": "70.50", "new": "55.50",
                                "hm": data["hm"][1][0]}
        # mouse: a click in the middle of the ω_b track moves it to the middle grid value (position 2 of 0..4)
        slider_b = ".dpc-omega-explorer input[name=omega_b]"
        page.locator(slider_b).scroll_into_view_if_needed()
        x, y, _ = _center(page, slider_b)
        page.mouse.click(x, y)
        assert _shown(page) == {"omega_b": "0.50", "omega_n": "0.00", "base": "72.12", "new": "55.50",
                                "hm": f"{harmonic_mean(72.125, 55.5):.2f}"}
        # keyboard: the clicked slider has the focus; → moves it one grid step
        page.keyboard.press("ArrowRight")
        i = 3
        shown = _shown(page)
        assert shown["omega_b"] == data["omegas"][i] == "0.75" and shown["base"] == data["base"][i] == "68.00"
        assert shown["hm"] == f"{harmonic_mean(68.0, 55.5):.2f}"
        # mouse: click at the right end of the ω_n track: ω_n = 1.00, new accuracy 40.00
        x, y, width = _center(page, ".dpc-omega-explorer input[name=omega_n]")
        page.mouse.click(x + width / 2 - 2, y)
        shown = _shown(page)
        assert shown["omega_n"] == "1.00" and shown["new"] == "40.00" == data["new"][4]
        assert shown["hm"] == data["hm"][i][4] == f"{harmonic_mean(float(data['base'][i]), 40.0):.2f}"
        bar = page.evaluate("document.querySelector('.dpc-omega-explorer [data-bar=new]').style.width")
        assert bar == "40%"
        if SCREENSHOT_DIR:
            page.screenshot(path=str(Path(SCREENSHOT_DIR) / "static_omega_explorer.png"))

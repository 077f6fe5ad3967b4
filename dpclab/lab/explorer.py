"""A static ω explorer: two sliders over a precomputed ω grid that work in a plain HTML page, with no kernel.

ipywidgets sliders (:func:`dpclab.lab.widgets.omega_sliders`) need a running kernel, so they are dead in the
HTML reports that ``python -m dpclab report`` writes. The ω grid is precomputed anyway
(:func:`dpclab.omega.omega_grid`), so every slider position can be read off in advance: this module writes the
read-outs for all (ω_b, ω_n) pairs as JSON into one self-contained block of inline HTML with a few lines of
JavaScript that only *looks up* the pre-formatted numbers (no arithmetic, no rounding in the browser). Shown with
``IPython.display.HTML``, nbconvert keeps it verbatim in the report, and it works in JupyterLab too.

>>> from dpclab.lab.explorer import omega_explorer
>>> omega_explorer(grid)  # in a notebook cell: the explorer, static and live
"""

from __future__ import annotations

import hashlib
import html
import json

from dpclab.omega import OmegaGrid, omega_view


def explorer_data(grid: OmegaGrid) -> dict:
    """Everything the explorer shows, computed in Python with :func:`dpclab.omega.omega_view` (the same read-out as
    the ipywidgets sliders): ``omegas`` and, per metric, the ``.2f`` strings the page displays. ``hm[i][j]`` is the
    HM at ω_b = omegas[i], ω_n = omegas[j]; ``default`` the grid indices of the method's own (ω_b, ω_n)."""
    omegas = [float(w) for w in grid.omegas]
    views = [[omega_view(grid, wb, wn) for wn in omegas] for wb in omegas]
    default_b, default_n = grid.meta.get("default", [0.2, 0.0])
    return {
        "omegas": [f"{w:.2f}" for w in omegas],
        "base": [f"{row[0]['base']:.2f}" for row in views],
        "new": [f"{v['new']:.2f}" for v in views[0]],
        "hm": [[f"{v['hm']:.2f}" for v in row] for row in views],
        "default": [grid.index(default_b), grid.index(default_n)],
    }


def _json_for_script(data: dict) -> str:
    # inside <script> only "</" could end the element early; "<\/" is the same JSON string
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


_STYLE = """
#{id} {{font-family: sans-serif; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px; max-width: 640px}}
#{id} .dpc-row {{display: flex; align-items: center; gap: 10px; margin: 4px 0}}
#{id} label {{width: 3.5em; font-weight: bold}}
#{id} input[type=range] {{flex: 1}}
#{id} .dpc-w {{width: 3em; font-family: monospace}}
#{id} .dpc-name {{width: 3.5em}}
#{id} .dpc-bar {{flex: 1; background: #eaeef2; height: 12px; border-radius: 3px}}
#{id} .dpc-bar div {{height: 12px; border-radius: 3px}}
#{id} .dpc-val {{width: 4em; text-align: right; font-family: monospace; font-weight: bold}}
#{id} .dpc-note {{color: #57606a; font-size: 85%; margin-top: 6px}}
"""

_SCRIPT = """
(function () {
  var root = document.getElementById("%(id)s");
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  var d = JSON.parse(root.querySelector("script.dpc-data").textContent);
  var sb = root.querySelector("input[name=omega_b]"), sn = root.querySelector("input[name=omega_n]");
  function put(key, text) { root.querySelector("[data-key=" + key + "]").textContent = text; }
  function bar(key, text) { root.querySelector("[data-bar=" + key + "]").style.width = Math.max(0, Math.min(100, parseFloat(text))) + "%%"; }
  function update() {
    var i = +sb.value, j = +sn.value;
    var shown = {omega_b: d.omegas[i], omega_n: d.omegas[j], base: d.base[i], "new": d["new"][j], hm: d.hm[i][j]};
    for (var k in shown) { put(k, shown[k]); }
    bar("base", shown.base); bar("new", shown["new"]); bar("hm", shown.hm);
  }
  sb.addEventListener("input", update);
  sn.addEventListener("input", update);
  update();
})();
"""


def omega_explorer_html(grid: OmegaGrid, title: str = "ω explorer (static: works without a kernel)") -> str:
    """The explorer as one self-contained HTML fragment (style, markup, the grid's read-outs as JSON, the script).

    Before any script runs (or without JavaScript) it shows the default (ω_b, ω_n). The element id is derived from
    the data, so a report is byte-identical across runs and two explorers on one page do not collide unless they
    show the same grid."""
    data = explorer_data(grid)
    payload = _json_for_script(data)
    uid = "dpc-omega-" + hashlib.sha256(payload.encode()).hexdigest()[:12]
    i, j = data["default"]
    last = len(data["omegas"]) - 1
    shown = {"omega_b": data["omegas"][i], "omega_n": data["omegas"][j], "base": data["base"][i],
             "new": data["new"][j], "hm": data["hm"][i][j]}

    def slider(name: str, label: str, value: int) -> str:
        return (f'<div class="dpc-row"><label for="{uid}-{name}">{label}</label>'
                f'<input type="range" id="{uid}-{name}" name="{name}" min="0" max="{last}" step="1" value="{value}" '
                f'aria-label="{label} (grid position)">'
                f'<span class="dpc-w" data-key="{name}">{shown[name]}</span></div>')

    def metric(key: str, name: str, colour: str) -> str:
        width = max(0.0, min(100.0, float(shown[key])))
        return (f'<div class="dpc-row"><span class="dpc-name">{name}</span>'
                f'<div class="dpc-bar"><div data-bar="{key}" style="width:{width}%;background:{colour}"></div></div>'
                f'<span class="dpc-val" data-key="{key}">{shown[key]}</span></div>')

    return (f'<div id="{uid}" class="dpc-omega-explorer" role="group" aria-label="{html.escape(title)}">'
            f"<style>{_STYLE.format(id=uid)}</style>"
            f"<div><strong>{html.escape(title)}</strong></div>"
            + slider("omega_b", "ω_b", i) + slider("omega_n", "ω_n", j)
            + metric("base", "base", "#0969da") + metric("new", "new", "#bf8700") + metric("hm", "HM", "#1a7f37")
            + '<div class="dpc-note">Test accuracy (%) read from the precomputed ω grid: base classes use the prompt '
              "at ω_b, new classes the prompt at ω_n; HM is their harmonic mean.</div>"
            f'<script type="application/json" class="dpc-data">{payload}</script>'
            f"<script>{_SCRIPT % {'id': uid}}</script></div>")


def omega_explorer(grid: OmegaGrid, title: str | None = None):
    """The explorer as an ``IPython.display.HTML`` object (display it, or leave it as a cell's last value)."""
    from IPython.display import HTML

    return HTML(omega_explorer_html(grid) if title is None else omega_explorer_html(grid, title))


__all__ = ["explorer_data", "omega_explorer_html", "omega_explorer"]

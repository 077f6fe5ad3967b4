"""Headless Chromium for the browser tests, driven over the DevTools protocol (websocket-client; no browser download).

As a script it installs the browser, best effort (the README's test command runs it before pytest)::

    python tests/browser.py --install

It finds Chromium (``$DPCLAB_BROWSER``, else chromium / chromium-browser / google-chrome on PATH); when there is
none and ``apt-get`` can run (root, or password-less sudo), it installs Debian's ``chromium`` package. It never
fails: without a browser the browser tests skip and say why.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# headless, sandbox-less (root in CI), and no background connections (this machine's network is closed)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


def find_browser() -> str | None:
    """Path of a Chromium-type browser, or None."""
    override = os.environ.get("DPCLAB_BROWSER")
    if override:
        return override if Path(override).is_file() else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_browser(log=print) -> str | None:
    """Install Debian's chromium with apt-get when no browser is found and apt-get can run; never raises."""
    found = find_browser()
    if found:
        log(f"browser: {found} ({_version(found)})")
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        log("browser: none found and no apt-get here; the browser tests will skip (install Chromium to run them)")
        return None
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        log("browser: none found, and apt-get needs root; the browser tests will skip")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    log("browser: installing Debian's chromium with apt-get (a few minutes, once)...")
    for cmd in (install, [*prefix, apt, "update", "-q"], install):  # the package lists may be missing or stale
        try:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=env, timeout=900, text=True)
        except (OSError, subprocess.TimeoutExpired) as err:
            log(f"browser: {' '.join(cmd)} failed ({err}); the browser tests will skip")
            return None
        if cmd[-1] == "chromium" and done.returncode == 0:
            break
    found = find_browser()
    tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
    log(f"browser: {found} ({_version(found)})" if found else f"browser: apt-get could not install chromium ({tail[0]}); "
                                          f"the browser tests will skip")
    return found


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol.

    >>> with Browser(find_browser()) as b:
    ...     b.open("file:///tmp/page.html"); b.eval("document.title")
    """

    def __init__(self, executable: str, width: int = 900, height: int = 700, timeout: float = 60.0):
        self.executable, self.size, self.timeout = executable, (width, height), timeout
        self._ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        import websocket

        self.profile = tempfile.mkdtemp(prefix="dpclab-chromium-")
        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not port_file.is_file() or len(port_file.read_text().split()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.poll() is not None else "(still starting)"
                self.__exit__()
                raise RuntimeError(f"Chromium did not start: {err[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        page = self._page_target(port, deadline)
        self.ws = websocket.create_connection(page, timeout=self.timeout, suppress_origin=True)
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def _page_target(self, port: int, deadline: float) -> str:
        from urllib.request import urlopen

        while True:
            try:
                with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                    pages = [t for t in json.load(resp) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Chromium started but offers no page over the DevTools protocol")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are dropped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str):
        """Evaluate JavaScript in the page and return its (JSON) value; a thrown error raises."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate and wait until the document has loaded (scripts ran)."""
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Poll a JavaScript expression until its JSON value is truthy in Python; return it. (A DOM node comes back
        as ``{}``, which is falsy: wrap such expressions in ``!!(...)``.)"""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for: {expression}")
            time.sleep(0.1)

    def center(self, selector: str) -> tuple[float, float]:
        box = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView(); "
                        f"const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }})()")
        return box[0] + box[2] / 2, box[1] + box[3] / 2

    def click(self, x: float, y: float) -> None:
        """A real mouse click (press and release) at viewport coordinates."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def key(self, key: str, code: str | None = None, key_code: int | None = None) -> None:
        """A real key press on the focused element (e.g. ``key("ArrowRight", key_code=39)``)."""
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code or key,
                      windowsVirtualKeyCode=key_code or 0)

    def screenshot(self, path: str | os.PathLike) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path


def _version(executable: str) -> str:
    try:
        out = subprocess.run([executable, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"version unknown: {err}"
    match = re.search(r"\d+(?:\.\d+)+", out)
    return f"version {match.group(0)}" if match else "version unknown"


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit(__doc__)
    install_browser()

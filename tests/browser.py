"""Headless Chromium for the browser tests: the system Chromium, driven by Playwright (``chromium.launch(
executable_path=...)``: Playwright's own browser download is never needed).

As a script it installs the browser, best effort (the README's test command runs it before pytest)::

    python tests/browser.py --install

It finds Chromium (``$DPCLAB_BROWSER``, else chromium / chromium-browser / google-chrome on PATH); when there is
none and ``apt-get`` can run (root, or password-less sudo), it installs Debian's ``chromium`` package. It never
fails: without a browser (or without the playwright package) the browser tests skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# sandbox-less (root in CI), and no background connections (this machine's network is closed)
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
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


def launch_options(executable: str) -> dict:
    """Keyword arguments of Playwright's ``chromium.launch`` for this system Chromium (headless, no download)."""
    return {"executable_path": executable, "headless": True, "args": list(FLAGS), "timeout": 120_000}


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (no Chromium, or no Playwright), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[dev]'); browser tests skipped"
    if find_browser() is None:
        return ("no Chromium here and it could not be installed (the README's test command runs "
                "`python tests/browser.py --install`, which needs apt-get as root); browser tests skipped")
    return None


@contextlib.contextmanager
def chromium_page(width: int = 900, height: int = 700, timeout_ms: float = 60_000):
    """A headless system Chromium page driven by Playwright; skips the calling test when there is none.

    >>> with chromium_page() as page:
    ...     page.goto("file:///tmp/page.html"); page.title()
    """
    import pytest

    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(**launch_options(find_browser()))
        try:
            page = chromium.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            chromium.close()


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

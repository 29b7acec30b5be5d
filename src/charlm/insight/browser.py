"""Screenshots of the inspection page in headless Chromium: the check that every view renders in a real browser.

Chromium runs with networking features off and a fresh profile, so the screenshot shows only what the file
itself holds. The view is chosen by the page's URL fragment (#surprise, #neurons, #attention).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from charlm.errors import CharLMError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_browser() -> str | None:
    """The path of an installed Chromium (or Chrome), or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: str | Path, png: str | Path, view: str = "surprise", size: tuple[int, int] = (1400, 1600)) -> Path:
    """Render `page` at `view` in headless Chromium and save a PNG of the window."""
    browser = find_browser()
    if browser is None:
        raise CharLMError("no Chromium found (apt-get install chromium): it is needed for screenshots")
    page, png = Path(page).resolve(), Path(png).expanduser().resolve()
    if not page.is_file():
        raise CharLMError(f"page {str(page)!r} does not exist")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="charlm-chromium-") as profile:
        args = [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}"]
        args += [f"--window-size={size[0]},{size[1]}", f"{page.as_uri()}#{view}"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CharLMError(f"Chromium could not render {page}: {last[:200]}")
    return png

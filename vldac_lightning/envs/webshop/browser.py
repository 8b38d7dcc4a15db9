"""Headless Chromium through Playwright, with the system's browser (no browser download).

One Chromium per process, one isolated context and page per env: navigations, clicks, form input and screenshots all go through
that page. The browser is Debian's ``chromium`` (``scripts/setup.sh`` installs it); Playwright
only drives it (``executable_path``), so ``playwright install`` is never needed. Playwright runs
the browser behind a driver process over pipes: when the env's process dies, even by SIGKILL,
the pipes close and both exit.
"""

from __future__ import annotations

import io
import os
import shutil
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["APT_LINE", "Browser", "chromium_problem", "find_chromium"]

APT_LINE = "sudo apt-get install -y --no-install-recommends chromium"
SCREENSHOT_TRIES = 4
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# What the env needs from a page, read in one round trip: the page kind, its score, whether it
# has a search box, its clickable labels (in page order) and its visible text.
_READ_PAGE = """() => ({
  page: document.body.dataset.page || '',
  reward: document.body.dataset.reward || '',
  asin: document.body.dataset.asin || '',
  search: document.getElementById('search_input') !== null,
  clickables: Array.from(document.querySelectorAll('[data-click]')).map(e => [e.dataset.click,
      e.classList.contains('selected')]),
  text: document.querySelector('main') ? document.querySelector('main').innerText : '',
})"""


def find_chromium(executable: str | None = None) -> str:
    """The browser binary: ``executable``, else ``$VLDAC_CHROMIUM``, else chromium on PATH."""
    for candidate in (executable, os.environ.get("VLDAC_CHROMIUM"), *_CANDIDATES):
        if candidate:
            path = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
            if path:
                return path
    raise FileNotFoundError(
        f"WebShop needs a Chromium browser and found none (tried {executable or '$VLDAC_CHROMIUM'}, "
        f"{', '.join(_CANDIDATES)}). Install it with `{APT_LINE}` (or run `bash scripts/setup.sh` as root), "
        "or point env.env_kwargs.browser_executable at a Chromium/Chrome binary"
    )


def chromium_problem(executable: str | None = None, timeout_s: float = 20.0) -> str | None:
    """Why WebShop could not drive a browser here (none found, or the binary is not a working
    Chromium/Chrome: ``--version`` fails or names something else), or None. Seconds, no page opened."""
    import subprocess

    try:
        path = find_chromium(executable)
    except FileNotFoundError as error:
        return str(error)
    fix = (f"point env.env_kwargs.browser_executable (or $VLDAC_CHROMIUM) at a Chromium/Chrome binary, or install "
           f"one with `{APT_LINE}`")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the browser {path} does not run ({type(error).__name__}: {error}); {fix}"
    version = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not any(name in version.lower() for name in ("chromium", "chrome")):
        said = f"exit status {done.returncode}" + (f", said {version[:80]!r}" if version else "")
        return f"the browser {path} is not a working Chromium ({path} --version: {said}); {fix}"
    return None


def _launch_failure(executable: str, error: Exception) -> RuntimeError:
    """Playwright's own message for a binary that exits at once is only ``TargetClosedError``."""
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return RuntimeError(f"WebShop's browser {executable} did not start as headless Chromium "
                        f"({type(error).__name__}: {first}). Point env.env_kwargs.browser_executable (or "
                        f"$VLDAC_CHROMIUM) at a working Chromium/Chrome binary, or install one with `{APT_LINE}`")


class _Chromium:
    """The process's one Playwright driver + Chromium, shared by its envs (reference-counted).

    Playwright's sync API allows one driver per thread, and one browser per process is also what
    keeps several in-process envs (``pool_mode: sync``) cheap: each env gets its own isolated
    context and page in it.
    """

    _instance: _Chromium | None = None

    def __init__(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        self.pid = os.getpid()
        self.executable = executable
        self.users = 0
        self.stopped = False
        self.playwright = sync_playwright().start()
        try:
            self.browser = self.playwright.chromium.launch(
                executable_path=executable, headless=True,
                # No sandbox: containers and root (CI) refuse Chromium's; the page is our own store.
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                      "--font-render-hinting=none", "--disable-extensions"],
            )
        except Exception as error:
            self.playwright.stop()
            raise _launch_failure(executable, error) from error

    @classmethod
    def acquire(cls, executable: str) -> _Chromium:
        shared = cls._instance
        if shared is not None and shared.pid == os.getpid() and not shared.browser.is_connected():
            # The browser died (crash, OOM kill): its envs fail and get replaced; stop the old
            # driver first, since a thread may run only one.
            shared._shutdown()
            shared = None
        if shared is None or shared.pid != os.getpid():
            shared = cls._instance = cls(executable)
        elif shared.executable != executable:
            raise ValueError(f"this process already runs Chromium from {shared.executable!r}; "
                             f"all WebShop envs of one process must use the same browser_executable")
        shared.users += 1
        return shared

    def release(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self._shutdown()

    def _shutdown(self) -> None:
        if _Chromium._instance is self:
            _Chromium._instance = None
        if self.stopped:
            return
        self.stopped = True
        for step in (self.browser.close, self.playwright.stop):
            try:
                step()
            except Exception:  # noqa: BLE001 - a dead browser is already closed
                pass


class Browser:
    """A headless Chromium page of ``width`` × ``height`` CSS pixels, in its own browser context."""

    def __init__(self, width: int, height: int, executable: str | None = None, timeout_s: float = 30.0) -> None:
        self.executable = find_chromium(executable)
        self._viewport = {"width": int(width), "height": int(height)}
        self._timeout_ms = timeout_s * 1000
        self._context: Any = None
        self._chromium: _Chromium | None = _Chromium.acquire(self.executable)
        try:
            self.new_page()
        except Exception:
            self._chromium.release()
            raise

    def new_page(self) -> None:
        """Replace the page (and its context) with a fresh one. Playwright keeps every request and
        response of a context alive until the context closes (≈ 45 KB per step here), so the env
        moves to a new page every few episodes to keep memory flat over a long run."""
        if self._context is not None:
            self._context.close()
        self._context = self._chromium.browser.new_context(viewport=self._viewport)
        self.page = self._context.new_page()
        self.page.set_default_timeout(self._timeout_ms)

    def goto(self, url: str) -> None:
        self.page.goto(url, wait_until="load")

    def click(self, index: int) -> None:
        """Click the ``index``-th ``data-click`` element and wait for the page it opens."""
        # A DOM click in the page: Playwright's pointer click adds actionability checks (visible,
        # stable over animation frames) that cost ~3x the navigation itself on our static pages.
        with self.page.expect_navigation(wait_until="load"):
            self.page.evaluate("i => document.querySelectorAll('[data-click]')[i].click()", index)

    def search(self, query: str) -> None:
        """Type ``query`` into the search box and press the search button."""
        self.page.fill("#search_input", query)
        with self.page.expect_navigation(wait_until="load"):
            self.page.evaluate("() => document.getElementById('search_button').click()")

    def read(self) -> dict[str, Any]:
        return self.page.evaluate(_READ_PAGE)

    def screenshot(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The viewport as uint8 RGB ``[H, W, 3]``, optionally resized to ``size`` = (width, height)."""
        from playwright.sync_api import Error

        for attempt in range(SCREENSHOT_TRIES):
            try:
                png = self.page.screenshot(type="png")
                break
            except Error as error:
                # Chromium sometimes has no frame to capture right after a navigation on a
                # saturated CPU ("Unable to capture screenshot"); the next frame comes soon.
                if "Unable to capture screenshot" not in str(error) or attempt == SCREENSHOT_TRIES - 1:
                    raise
                self.page.wait_for_timeout(50 * (attempt + 1))
        image = Image.open(io.BytesIO(png)).convert("RGB")
        if size is not None and image.size != tuple(size):
            image = image.resize(tuple(size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def close(self) -> None:
        if self._chromium is None:
            return
        try:
            self._context.close()
        except Exception:  # noqa: BLE001 - a dead browser is already closed
            pass
        self._chromium.release()
        self._chromium = None

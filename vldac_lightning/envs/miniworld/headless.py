"""Headless OpenGL for MiniWorld: pyglet over EGL (Mesa's software renderer on CPU), no X server.

MiniWorld renders every observation with OpenGL through pyglet. pyglet picks its windowing
backend when ``pyglet.window`` is first imported, so the headless (EGL) choice must be made
*before* ``miniworld`` is imported (``PYOPENGL_PLATFORM=egl`` is read too late and fails with
``NoSuchDisplayException``). :func:`import_miniworld` does that, and turns every way the GL stack
can be missing into one error that says what to install.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

__all__ = ["APT_PACKAGES", "MiniWorldUnavailable", "ensure_headless", "gl_error_message", "import_miniworld"]

# Debian/Ubuntu packages for headless EGL rendering with Mesa (llvmpipe on CPU); scripts/setup.sh
# installs them when missing.
APT_PACKAGES = ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libgl1", "libglu1-mesa")

_TRUE = ("1", "true", "yes", "on")


class MiniWorldUnavailable(RuntimeError):
    """The ``miniworld`` package or the OpenGL stack it renders with is missing."""


def gl_error_message(cause: BaseException | str) -> str:
    """What failed and exactly what to install (EGL + Mesa), with the Xvfb fallback."""
    return (
        f"MiniWorld cannot render: {cause}\n"
        "MiniWorld draws its observations with OpenGL. Headless (no X server) it needs EGL and Mesa:\n"
        f"    sudo apt-get install -y --no-install-recommends {' '.join(APT_PACKAGES)}\n"
        "(scripts/setup.sh installs them when run as root). Fallback with a virtual X server:\n"
        "    sudo apt-get install -y xvfb && PYGLET_HEADLESS=false xvfb-run -a python -m vldac_lightning.train ..."
    )


def headless_requested() -> bool:
    """Headless unless the user set ``PYGLET_HEADLESS`` to a false value (e.g. under xvfb-run)."""
    return os.environ.get("PYGLET_HEADLESS", "true").strip().lower() in _TRUE


def ensure_headless() -> None:
    """Switch pyglet to its headless EGL backend, before ``pyglet.window`` is ever imported.

    Idempotent. Respects an explicit ``PYGLET_HEADLESS=false`` (for an X server or Xvfb). Spawned
    pool workers inherit the environment variable, so they pick EGL too.
    """
    if not headless_requested():
        return
    os.environ["PYGLET_HEADLESS"] = "true"
    if "pyglet" in sys.modules:
        import pyglet

        if "pyglet.window" in sys.modules and not pyglet.options["headless"]:
            raise MiniWorldUnavailable(
                "pyglet.window was imported before headless mode was set; import vldac_lightning's "
                "MiniWorld envs before anything else imports pyglet, or set PYGLET_HEADLESS=true"
            )
        pyglet.options["headless"] = True


def import_miniworld() -> ModuleType:
    """Import ``miniworld`` headless; :class:`MiniWorldUnavailable` says what to install if it fails."""
    ensure_headless()
    try:
        import miniworld
    except ModuleNotFoundError as e:
        if e.name not in ("miniworld", "pyglet"):
            raise
        raise MiniWorldUnavailable(
            f"the '{e.name}' package is not installed; install the MiniWorld extra: "
            "pip install -e '.[miniworld]' (scripts/setup.sh installs it by default)"
        ) from e
    except ImportError as e:  # pyglet cannot load libGL / libGLU / libEGL
        raise MiniWorldUnavailable(gl_error_message(e)) from e
    return miniworld

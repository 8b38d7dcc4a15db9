"""Regenerates docs/images/alfworld.png: the picture of an ALFWorld state after the expert's first moves.

    PYTHONPATH=$PWD python experiments/render_alfworld.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image


def main() -> None:
    os.environ.setdefault("ALFWORLD_DATA", tempfile.mkdtemp(prefix="alfworld_render_"))
    from vldac_lightning.envs.alfworld.env import AlfworldEnv

    env = AlfworldEnv(source="generated", image_history=1, image_size=128)
    frames = [env.reset(seed=3)[0]["images"][0]]
    for _ in range(3):  # go to the object, take it, go to the appliance
        frames.append(env.step(env.oracle_text())[0]["images"][0])
    env.close()
    strip = Image.new("RGB", (128 * len(frames) + 8 * (len(frames) - 1), 128), (255, 255, 255))
    for i, f in enumerate(frames):
        strip.paste(Image.fromarray(f), (i * 136, 0))
    out = Path(__file__).resolve().parents[1] / "docs" / "images" / "alfworld.png"
    strip.save(out)
    print(out)


if __name__ == "__main__":
    main()

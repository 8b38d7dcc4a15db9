"""Regenerate docs/images/miniworld_{oneroom,hallway,fourrooms,wallgap}.png: one prompt's image
history (4 frames, oldest first, at the paper's 80×60) for each MiniWorld task at seed 0, taken as
the greedy oracle turns toward the red box, side by side and enlarged 3× (nearest neighbour).

Usage: python experiments/render_miniworld.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from vldac_lightning.envs import make_language_env  # noqa: E402
from vldac_lightning.envs.miniworld import TASKS  # noqa: E402

SCALE = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        env = make_language_env(f"miniworld/{task}-v0", image_history=4, response_mode="action_only",
                                prompt_version="action_only")
        try:
            obs, info = env.reset(seed=0)
            for _ in range(40):  # until the box is about centred (at least 3 steps: a full history)
                if info["episode_length"] >= 3 and abs(info["goal_bearing"]) < 10:
                    break
                obs, _, _, _, info = env.step(env.oracle_text())
            frames = obs["images"][: obs["num_images"]]
        finally:
            env.close()
        h, w = frames.shape[1:3]
        strip = Image.new("RGB", (len(frames) * (w + 2) - 2, h), "white")
        for i, frame in enumerate(frames):
            strip.paste(Image.fromarray(frame), (i * (w + 2), 0))
        path = args.out / f"miniworld_{task.lower()}.png"
        strip.resize((strip.width * SCALE, strip.height * SCALE), Image.NEAREST).save(path, optimize=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

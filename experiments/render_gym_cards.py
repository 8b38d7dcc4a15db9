"""Regenerate docs/images/{numberline,ezpoints,points24,blackjack}.png: each Gym-Cards game's
first observation at seed 0.

Usage: python experiments/render_gym_cards.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from vldac_lightning.envs.gym_cards import BlackjackEnv, EZPointsEnv, NumberLineEnv, Points24Env  # noqa: E402

GAMES = {
    "numberline": NumberLineEnv,
    "ezpoints": EZPointsEnv,
    "points24": Points24Env,
    "blackjack": BlackjackEnv,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cls in GAMES.items():
        obs, info = cls().reset(seed=args.seed)
        path = args.out / f"{name}.png"
        Image.fromarray(obs).save(path)
        print(f"{path}: {info}")


if __name__ == "__main__":
    main()

"""Regenerates docs/images/webshop_*.png: one screenshot of each page type of the WebShop store
(search, results, item with an option chosen, a detail sub-page, done), along an expert episode.

    PYTHONPATH=$PWD python experiments/render_webshop.py
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def main() -> None:
    from vldac_lightning.envs.webshop.env import WebShopEnv

    env = WebShopEnv(image_history=1)
    out = Path(__file__).resolve().parents[1] / "docs" / "images"
    goals = env.store.split(evaluation=True)
    # The first evaluation goal from #7 on that names an option (so the item shot shows one chosen).
    seed = next(s for s in range(1_000_000_007, 1_000_000_107) if goals[s % 1_000_000_000 % len(goals)]["goal_options"])
    shots = {"search": env.reset(seed=seed)[0]}
    shots["results"] = env.step(env.oracle_text())[0]
    while env._page["page"] != "item":  # the expert pages on to the goal product
        shots["item"] = env.step(env.oracle_text())[0]
    shots["item"] = env.step(env.oracle_text())[0]  # ... with its first goal option chosen
    shots["sub"] = env.step(json.dumps({"action": "click[features]"}))[0]
    env.step(json.dumps({"action": "click[< prev]"}))
    obs = None
    while env._page["page"] != "done":
        obs = env.step(env.oracle_text())[0]
    shots["done"] = obs
    env.close()
    for name, o in shots.items():
        path = out / f"webshop_{name}.png"
        Image.fromarray(o["images"][0]).save(path, optimize=True)
        print(path)


if __name__ == "__main__":
    main()

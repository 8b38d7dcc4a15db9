"""WebShop's own data files (a small fixture in their format) load as WebShop loads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vldac_lightning.envs.webshop.store import Store

CATEGORY = "Beauty & Personal Care › Hair Care › Hair Extensions, Wigs & Accessories › Extensions"


def _item(asin: str, name: str, pricing: str, colors: list[str]) -> dict[str, Any]:
    return {
        "asin": asin, "category": "beauty", "query": "Hair Extensions ", "name": name,
        "product_category": CATEGORY, "full_description": f"{name}. Natural looking and soft.",
        "pricing": pricing, "images": ["https://example.invalid/a.jpg"],
        "customization_options": {"Color": [{"value": c, "image": None} for c in colors],
                                  "Size": [{"value": "18 Inch", "image": None}, {"value": "22 Inch", "image": None}]},
        "small_description": ["Clip-in design", "Heat resistant fibre"],
        "product_information": {}, "brand": "x",
    }


def write_fixture(root: Path) -> None:
    items = [
        _item("B07ABC0001", "Clip in Hair Extensions Long Straight", "$25.99", ["Natural Black", "Light Brown/Blonde"]),
        _item("B07ABC0002", "Wavy Synthetic Hair Extension Ponytail", "$12.99 to $15.99", ["Dark Brown"]),
        _item("B07ABC0003", "Curly Hair Bun Scrunchie", "", ["Black"]),
        {**_item("nan", "broken", "$1", ["x"])},  # WebShop skips asin "nan"
    ]
    attributes = {"B07ABC0001": {"attributes": ["natural looking", "long lasting"]},
                  "B07ABC0002": {"attributes": ["heat resistant"]}}
    human = {
        "B07ABC0001": [
            {"asin": "B07ABC0001", "instruction": "i need long clip in hair extensions which are natural looking.",
             "instruction_attributes": ["natural looking"], "instruction_options": ["natural black", "18 inch"]},
            {"asin": "B07ABC0001", "instruction": "no attributes here", "instruction_attributes": [],
             "instruction_options": []},
        ],
        "B07ABC0002": [
            {"asin": "B07ABC0002", "instruction": "i want a wavy ponytail extension that is heat resistant",
             "instruction_attributes": ["heat resistant"], "instruction_options": ["dark brown"]},
        ],
        "B07ABC0003": [
            {"asin": "B07ABC0003", "instruction": "a curly hair bun", "instruction_attributes": ["curly"],
             "instruction_options": ["black"]},
        ],
    }
    (root / "items_shuffle.json").write_text(json.dumps(items))
    (root / "items_ins_v2.json").write_text(json.dumps(attributes))
    (root / "items_human_ins.json").write_text(json.dumps(human))


def test_original_files_load_like_webshops_loader(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    store = Store.original(tmp_path, num_eval_goals=1, seed=0)
    assert store.source == "original" and [p["asin"] for p in store.products] == ["B07ABC0001", "B07ABC0002",
                                                                                   "B07ABC0003"]
    first, ranged, unpriced = store.products
    assert first["options"] == {"color": ["natural black", "light brown | blonde"], "size": ["18 inch", "22 inch"]}
    assert first["Attributes"] == ["natural looking", "long lasting"] and first["Price"] == "$25.99"
    assert unpriced["Attributes"] == ["DUMMY_ATTR"] and unpriced["pricing"] == [100.0]  # WebShop's defaults
    assert ranged["Price"] == "$12.99 to $15.99" and 12.99 <= store.prices["B07ABC0002"] <= 15.99
    assert first["query"] == "hair extensions"
    # 3 goals: the instruction without attributes is skipped; the price clause is appended.
    assert len(store.goals) == 3
    goal = next(g for g in store.goals if g["asin"] == "B07ABC0001")
    assert goal["instruction_text"].startswith("i need long clip in hair extensions which are natural looking, and price lower than ")
    assert goal["goal_options"] == ["natural black", "18 inch"] and goal["price_upper"] in (40.0, 50.0, 60.0)


def test_missing_original_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    (tmp_path / "items_human_ins.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"items_human_ins\.json.*data_dir: null"):
        Store.original(tmp_path, num_eval_goals=1)


def test_the_env_serves_the_original_data(tmp_path: Path, make_env: Any) -> None:
    write_fixture(tmp_path)
    env = make_env({"data_dir": str(tmp_path), "num_eval_goals": 1})
    obs, info = env.reset(seed=1_000_000_000)  # the one evaluation goal
    goal = env.unwrapped._goal
    assert goal["instruction_text"] in obs["text"]
    reward, steps = 0.0, 0
    while steps < 10:
        obs, reward, terminated, truncated, info = env.step(env.oracle_text())
        steps += 1
        if terminated:
            break
    assert terminated and info["page"] == "done"
    assert reward == info["score"] == 1.0  # goal item, goal options, price within the bound


def test_the_original_data_is_scored_with_webshops_formula(tmp_path: Path, make_env: Any) -> None:
    write_fixture(tmp_path)
    env = make_env({"data_dir": str(tmp_path), "num_eval_goals": 1})
    train = env.unwrapped.store.split(evaluation=False)
    index = next(i for i, g in enumerate(train) if g["asin"] == "B07ABC0001")
    env.reset(seed=0, options={"goal_index": index})
    while env.unwrapped._page["page"] != "item":
        env.step(env.unwrapped.oracle_text())
    # Goal: attribute "natural looking", options "natural black" and "18 inch", a bound above $25.99.
    # Chosen: "light brown | blonde" (normalised "brown" vs "black": no match) and "22 inch" (ratio 73 with
    # "18 inch": no match). (1 attribute + 0 options + price) / (1 + 2 + 1) = 0.5, r_type 1 (same title).
    for label in ("light brown | blonde", "22 inch"):
        env.step(json.dumps({"action": f"click[{label}]"}))
    _, reward, terminated, _, info = env.step(json.dumps({"action": "click[buy now]"}))
    assert terminated and reward == info["score"] == 0.5

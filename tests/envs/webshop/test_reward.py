"""WebShop's purchase reward on hand-worked cases (formula in vldac_lightning/envs/webshop/reward.py)."""

from __future__ import annotations

from typing import Any

import pytest

from vldac_lightning.envs.webshop.reward import normalize_color, purchase_reward, title_nouns, type_reward

HAIR = "Beauty & Personal Care › Hair Care › Extensions"


def product(**overrides: Any) -> dict[str, Any]:
    p = {
        "asin": "B000000001", "query": "hair extensions", "product_category": HAIR,
        "name": "Acme Long Clip-In Hair Extension - Natural Looking",
        "Attributes": ["natural looking", "long lasting", "high quality"],
        "BulletPoints": ["Soft and easy to style."], "Description": "A clip-in hair extension.",
        "options": {"color": ["honey blonde", "dark brown"], "size": ["18 inch", "20 inch"]},
    }
    p.update(overrides)
    p["Title"] = p["name"]
    return p


GOAL = {"asin": "B000000001", "query": "hair extensions", "product_category": HAIR,
        "name": "Acme Long Clip-In Hair Extension - Natural Looking",
        "attributes": ["natural looking", "long lasting"], "goal_options": {"color": "honey blonde", "size": "18 inch"},
        "price_upper": 40.0}


def test_the_right_item_with_the_right_options_under_budget_scores_one() -> None:
    reward, parts = purchase_reward(product(), GOAL, 30.0, {"color": "honey blonde", "size": "18 inch"})
    # (2 attributes + 2 options + price) / (2 + 2 + 1) = 5/5, r_type 1 (same title).
    assert reward == 1.0 and parts["r_type"] == 1.0 and parts["title_score"] == 1.0


def test_a_missing_option_and_a_price_over_budget_each_cost_one_part() -> None:
    # color chosen, size not; 45 > 40: (2 + 1 + 0) / 5.
    reward, parts = purchase_reward(product(), GOAL, 45.0, {"color": "honey blonde"})
    assert reward == pytest.approx(3 / 5)
    assert (parts["attribute_matches"], parts["option_matches"], parts["r_price"]) == (2, 1, False)


def test_a_price_equal_to_the_bound_counts() -> None:
    assert purchase_reward(product(), GOAL, 40.0, {"color": "honey blonde", "size": "18 inch"})[0] == 1.0


def test_attributes_match_fuzzily_or_through_the_product_text() -> None:
    # "long-lasting" ~ "long lasting" (token-set ratio 100 after punctuation stripping); "easy to style"
    # is in no attribute but in the bullet points; "waterproof" is nowhere: 2 of 3.
    goal = {**GOAL, "attributes": ["long-lasting", "easy to style", "waterproof"], "goal_options": {}}
    reward, parts = purchase_reward(product(), goal, 10.0, {})
    assert parts["attribute_matches"] == 2 and reward == pytest.approx((2 + 0 + 1) / (3 + 0 + 1))


def test_size_needs_an_exact_match_other_options_a_fuzzy_one() -> None:
    # "honey blond" vs "honey blonde": fuzzy match; "18 inches" vs "18 inch": size is exact-only
    # and "18 inches" is not in the title/bullets/description.
    reward, parts = purchase_reward(product(), GOAL, 10.0, {"color": "honey blond", "size": "18 inches"})
    assert parts["option_matches"] == 1 and reward == pytest.approx((2 + 1 + 1) / 5)


def test_goal_options_may_be_a_list_as_in_webshops_human_instructions() -> None:
    goal = {**GOAL, "goal_options": ["honey blonde", "18 inch"]}
    assert purchase_reward(product(), goal, 10.0, {"color": "honey blonde", "size": "18 inch"})[0] == 1.0


def test_colors_are_normalised_to_webshops_colour_names() -> None:
    assert normalize_color("natural black") == "black"  # alphabetical: black before natural
    assert normalize_color("violet lavender") == "lavender"
    assert normalize_color("18 inch") == "18 inch"
    # "jet black" chosen for the goal "black": both normalise to "black".
    goal = {**GOAL, "goal_options": {"color": "black"}}
    assert purchase_reward(product(), goal, 10.0, {"color": "jet black"})[1]["option_matches"] == 1


def test_title_nouns_drop_stop_words_and_punctuation() -> None:
    assert title_nouns("Acme Long Clip-In Hair Extension - Natural Looking") == [
        "acme", "long", "clip-in", "hair", "extension", "natural", "looking"]


def test_r_type_levels() -> None:
    goal_nouns = 7  # acme long clip-in hair extension natural looking
    # Same query: r_type 1 even with a low title overlap (1/7 ≥ 0.1).
    other = product(name="Zentro Wavy Hair Bun", query="hair extensions")
    assert type_reward(other, GOAL) == {"r_type": 1.0, "query_match": True, "category_match": True,
                                        "title_score": pytest.approx(1 / goal_nouns)}
    # Different query, one shared breadcrumb level, 1/7 overlap (≤ 0.2): 0.5.
    other = product(name="Zentro Hair Dryer", query="hair dryer",
                    product_category="Beauty & Personal Care › Tools › Dryers")
    assert type_reward(other, GOAL)["r_type"] == 0.5
    # 2/7 > 0.2: a title match alone is enough for 1.
    other = product(name="Zentro Hair Extension Glue", query="glue", product_category="Arts › Glue")
    assert type_reward(other, GOAL)["r_type"] == 1.0
    # Nothing shared with the goal's title: 0, whatever the query and category say.
    other = product(name="Zentro Wig Cap")
    assert type_reward(other, GOAL)["r_type"] == 0.0
    # Below 0.1 (1 of 11 nouns): 0.1 even though the query matches.
    long_goal = {**GOAL, "name": "A B C D E F G H I J Hair".replace(" ", "x ") + "x"}
    assert len(title_nouns(long_goal["name"])) == 11
    other = product(name="Hairx Bun")
    assert type_reward(other, long_goal) == {"r_type": 0.1, "query_match": True, "category_match": True,
                                             "title_score": pytest.approx(1 / 11)}


def test_r_type_multiplies_the_whole_score() -> None:
    other = product(name="Zentro Hair Dryer", query="hair dryer",
                    product_category="Beauty & Personal Care › Tools › Dryers")
    reward, parts = purchase_reward(other, GOAL, 10.0, {"color": "honey blonde", "size": "18 inch"})
    # Attributes and options still match (5/5), halved by r_type 0.5.
    assert parts["r_type"] == 0.5 and reward == pytest.approx(0.5)

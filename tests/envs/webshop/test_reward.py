"""WebShop's purchase reward on hand-worked cases (formula in vldac_lightning/envs/webshop/reward.py)."""

from __future__ import annotations

from typing import Any

import pytest

from vldac_lightning.envs.webshop.reward import (
    normalize_color,
    noun_tagger,
    purchase_reward,
    title_nouns,
    token_set_ratio,
    type_reward,
)

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


def test_options_match_fuzzily_by_goal_option_whatever_their_name() -> None:
    # Goal options: honey blonde, 18 inch. Chosen: "honey blond" (ratio 96 > 85) and "18 inches"
    # (token sets {18, inches} vs {18, inch}: ratio("18 inch", "18 inches") = 2*7/16 = 87.5 -> 88 > 85).
    # Size is fuzzy like every other option in WebShop master: 2 matches, 5/5.
    assert token_set_ratio("18 inches", "18 inch") == 88
    reward, parts = purchase_reward(product(), GOAL, 10.0, {"color": "honey blond", "size": "18 inches"})
    assert parts["option_matches"] == 2 and reward == 1.0


@pytest.mark.parametrize(("wanted", "chosen", "ratio"), [
    ("large", "x-large", 100),      # token sets {large} ⊂ {x, large}: the intersection alone scores 100
    ("7", "7.5", 100),              # "7.5" -> tokens {7, 5}
    ("pack of 1", "pack of 12", 95),  # "of pack 1" vs "of pack 12": 2*9/(9+10) = 94.7 -> 95
])
def test_near_sizes_match_as_in_webshop_master(wanted: str, chosen: str, ratio: int) -> None:
    assert token_set_ratio(chosen, wanted) == ratio
    goal = {**GOAL, "goal_options": {"size": wanted}}
    # (2 attributes + 1 option + price) / (2 + 1 + 1) = 1.
    assert purchase_reward(product(), goal, 10.0, {"size": chosen})[0] == 1.0


def test_a_wrong_choice_earns_nothing_from_the_product_text() -> None:
    # "navy blue" normalises to "blue", a substring of "bluetooth" in the title; the goal asks for
    # black. The product text is never consulted for options: 0 of 1 option,
    # (1 attribute + 0 + price) / (1 + 1 + 1) = 2/3.
    speaker = product(name="Acme Bluetooth Speaker - Stereo Sound", Attributes=["stereo sound"],
                      Description="Available in 6 variants.")
    goal = {**GOAL, "name": speaker["name"], "attributes": ["stereo sound"], "goal_options": {"color": "black"}}
    reward, parts = purchase_reward(speaker, goal, 10.0, {"color": "navy blue"})
    assert parts["option_matches"] == 0 and reward == pytest.approx(2 / 3)
    # Shoe size 6 chosen for a goal of 7, with "6" in the description: still no match.
    goal = {**goal, "goal_options": {"size": "7"}}
    reward, parts = purchase_reward(speaker, goal, 10.0, {"size": "6"})
    assert parts["option_matches"] == 0 and reward == pytest.approx(2 / 3)


def test_options_the_goal_does_not_ask_for_add_nothing() -> None:
    # Goal: one option (black). Chosen: black and large; "large" also appears in the title. The
    # chosen-option loop with a text fallback counted 2 matches: (1 + 2 + 1) / (1 + 1 + 1) = 1.333.
    # Per goal option it is 1: (1 + 1 + 1) / 3 = 1.
    item = product(name="Acme Large Tote Bag - Water Resistant", Attributes=["water resistant"])
    goal = {**GOAL, "name": item["name"], "attributes": ["water resistant"], "goal_options": ["black"]}
    reward, parts = purchase_reward(item, goal, 10.0, {"color": "black", "size": "large"})
    assert parts["option_matches"] == 1 and reward == 1.0


def test_one_chosen_value_may_satisfy_several_goal_options() -> None:
    # WebShop master loops over goal options, each looking for any chosen value: goal options
    # "black" and "jet black" both normalise to "black" and both match the one chosen "black".
    goal = {**GOAL, "goal_options": ["black", "jet black"]}
    assert purchase_reward(product(), goal, 10.0, {"color": "black"})[1]["option_matches"] == 2


def test_token_set_ratio_preprocesses_like_thefuzz() -> None:
    assert token_set_ratio("Long-Lasting!", "long lasting") == 100  # lower-cased, punctuation to spaces
    assert token_set_ratio("caf\u00e9 noir", "caf noir") == 100  # force_ascii drops characters 128..255
    assert token_set_ratio("medium", "large") < 50


def test_title_nouns_are_configurable() -> None:
    assert noun_tagger("words") is title_nouns
    with pytest.raises(ValueError, match=r"title_nouns must be one of \('words', 'spacy'\), got 'nltk'"):
        noun_tagger("nltk")
    # A caller's tagger decides title_score: only "extension" counts as a noun here (1/1 shared).
    parts = type_reward(product(name="Zentro Extension Glue"), GOAL, nouns=lambda t: [w for w in t.lower().split()
                                                                                   if w == "extension"])
    assert parts["title_score"] == 1.0


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


def test_a_missing_spacy_model_names_the_key_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from vldac_lightning.envs.webshop import reward

    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    reward._spacy_pipeline.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"title_nouns='spacy' needs spaCy and its en_core_web_sm.*"
                                               r"or set title_nouns: words"):
            noun_tagger("spacy")
    finally:
        reward._spacy_pipeline.cache_clear()

"""The WebShop env in a real headless Chromium: page flow, actions, screenshots, expert, protocol."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

EVAL = 1_000_000_000


def act(action: str) -> str:
    return json.dumps({"thoughts": "", "action": action})


def test_the_page_flow_search_results_paging_item_options_subpages_back(make_env: Any) -> None:
    env = make_env()
    obs, info = env.reset(seed=5)
    assert info["page"] == "search" and "search[...]" in obs["text"]
    goal = env.unwrapped._goal
    obs, _, _, _, info = env.step(act("search[black]"))
    assert info["page"] == "results" and info["action_valid"]
    page1 = [c for c in env.unwrapped.clickables() if c.startswith("g")]
    assert len(page1) == 10 and "next >" in env.unwrapped.clickables() and "< prev" not in env.unwrapped.clickables()
    env.step(act("click[Next >]"))  # labels match case-insensitively
    page2 = [c for c in env.unwrapped.clickables() if c.startswith("g")]
    assert len(page2) == 10 and not set(page1) & set(page2) and "< prev" in env.unwrapped.clickables()
    assert "Page 2" in env.unwrapped._page["text"]
    env.step(act("click[< prev]"))
    assert [c for c in env.unwrapped.clickables() if c.startswith("g")] == page1
    obs, _, _, _, info = env.step(act(f"click[{page1[0]}]"))
    assert info["page"] == "item"
    item = env.unwrapped.store.by_asin[page1[0].upper()]
    option_name, values = next(iter(item["options"].items()))
    assert all(f"click[{v}]" in env.unwrapped.choices() for v in values)
    obs, _, _, _, info = env.step(act(f"click[{values[-1]}]"))
    assert info["page"] == "item" and f"chosen so far: {values[-1]}" in obs["text"]
    obs, _, _, _, info = env.step(act("click[features]"))
    assert info["page"] == "sub" and item["BulletPoints"][0] in env.unwrapped._page["text"]
    obs, _, _, _, info = env.step(act("click[< prev]"))
    assert info["page"] == "item" and f"chosen so far: {values[-1]}" in obs["text"]  # the option is kept
    obs, _, _, _, info = env.step(act("click[back to search]"))
    assert info["page"] == "search" and env.unwrapped._goal is goal
    assert info["episode_length"] == 8 and info["episode_return"] == 0.0


def test_buying_ends_the_episode_with_the_stores_score(make_env: Any) -> None:
    env = make_env()
    env.reset(seed=EVAL + 3)
    goal = env.unwrapped._goal
    while env.unwrapped._page["page"] != "item":  # the expert finds the goal product
        env.step(env.unwrapped.oracle_text())
    assert env.unwrapped._page["asin"] == goal["asin"]
    obs, reward, terminated, truncated, info = env.step(act("click[buy now]"))  # no options chosen
    assert terminated and not truncated and info["page"] == "done"
    n_att, n_opt = len(goal["attributes"]), len(goal["goal_options"])
    assert reward == pytest.approx((n_att + 0 + 1) / (n_att + n_opt + 1)) == info["score"]
    assert info["success"] is False and info["split"] == "eval"
    assert f"{reward:.4f}" in env.unwrapped._page["text"]  # the done page shows the score
    # The order is final and paid once: later steps (a search, an invalid click) change nothing, pay 0.
    for text in (act("search[anything]"), act("click[buy now]"), "junk"):
        obs2, reward2, terminated2, truncated2, info2 = env.step(text)
        assert (reward2, terminated2, truncated2, info2["page"]) == (0.0, True, False, "done")
        assert info2["episode_return"] == reward and info2["score"] == reward and obs2["text"] == obs["text"]


def test_search_runs_from_any_page_as_in_webshops_text_env(make_env: Any) -> None:
    env = make_env()
    env.reset(seed=1)
    env.step(act("search[office chair]"))
    env.step(act(f"click[{env.unwrapped.clickables()[-1]}]"))
    assert env.unwrapped._page["page"] == "item"
    obs, reward, _, _, info = env.step(act("search[Lipstick]"))  # no search box here: the results open directly
    assert info["action_valid"] and info["page"] == "results" and reward == 0.0
    assert env.unwrapped.store.search.search("lipstick")[0].lower() in env.unwrapped.clickables()
    assert env.unwrapped._server.sessions[env.unwrapped._sid]["keywords"] == "Lipstick"


def test_invalid_actions_change_nothing_and_cost_the_penalty(make_env: Any) -> None:
    env = make_env({"search_anywhere": False}, parse_failure_penalty=-0.5)
    obs0, _ = env.reset(seed=1)
    cases = ["click[buy now]", "search[]", "jump[now]"]  # no such button on the search page / empty / unknown verb
    for text in cases:
        obs, reward, terminated, truncated, info = env.step(act(text))
        assert (info["parse_ok"], info["action_valid"], reward) == (True, False, -0.5), text
        assert obs["text"] == obs0["text"] and obs["num_images"] == 1 and not terminated
    obs, reward, _, _, info = env.step("no json at all")
    assert (info["parse_ok"], info["action_valid"], reward) == (False, False, -0.5)
    env.step(act("search[office chair]"))
    env.step(act(f"click[{env.unwrapped.clickables()[-1]}]"))  # a product
    assert env.unwrapped._page["page"] == "item"
    obs, reward, _, _, info = env.step(act("search[desk]"))  # no search box, and search_anywhere is off
    assert not info["action_valid"] and env.unwrapped._page["page"] == "item" and reward == -0.5


def test_next_is_on_every_results_page_as_in_webshop(make_env: Any) -> None:
    env = make_env()
    env.reset(seed=0)
    env.step(act("search[black]"))
    total = len(env.unwrapped.store.search.search("black"))
    assert total == 50  # a full result list: 5 pages of 10
    for page in range(2, 7):
        assert "next >" in env.unwrapped.clickables()
        _, _, _, _, info = env.step(act("click[next >]"))
        assert info["action_valid"] and f"Page {page}" in env.unwrapped._page["text"]
    # Page 6 lies past the 50 results: empty, with Next > and < Prev still there (WebShop's pager).
    labels = env.unwrapped.clickables()
    assert not [lbl for lbl in labels if lbl.upper() in env.unwrapped.store.by_asin]
    assert {"next >", "< prev", "back to search"} <= set(labels)


def test_random_parse_failures_play_a_listed_action(make_env: Any) -> None:
    env = make_env(parse_failure="random")
    env.reset(seed=2)
    _, _, _, _, info = env.step("gibberish")
    assert not info["action_valid"] and info["page"] == "results"  # the only choice: the search


def test_the_horizon_is_configurable_up_to_webshops_published_100(make_env: Any) -> None:
    env = make_env(max_episode_steps=100)
    env.reset(seed=0)
    for step in range(1, 101):
        _, _, terminated, truncated, info = env.step(act("click[nothing]"))
        assert truncated == (step == 100) and not terminated
    assert info["episode_length"] == 100


def test_the_horizon_truncates_without_reward(make_env: Any) -> None:
    env = make_env(max_episode_steps=3)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(act("click[nothing]"))
    assert truncated and not terminated and reward == 0.0 and info["score"] == 0.0 and not info["success"]


def test_screenshots_are_real_rendered_pages(make_env: Any) -> None:
    env = make_env(image_history=2)
    obs, _ = env.reset(seed=0)
    assert obs["images"].shape == (2, 360, 480, 3) and obs["images"].dtype == np.uint8 and obs["num_images"] == 1
    search = obs["images"][0]
    assert search.std() > 10 and len(np.unique(search.reshape(-1, 3), axis=0)) > 20  # text, not a blank
    assert not obs["images"][1].any()  # padding
    obs, *_ = env.step(act("search[green tea]"))
    results = obs["images"][1]
    assert obs["num_images"] == 2 and np.array_equal(obs["images"][0], search)
    assert np.abs(results.astype(int) - search).mean() > 5  # a different page
    small = make_env({"image_size": [160, 120]})
    assert small.reset(seed=0)[0]["images"].shape == (2, 120, 160, 3)


def test_the_expert_scores_at_least_0_9(make_env: Any) -> None:
    env = make_env()
    scores = []
    for seed in range(EVAL, EVAL + 12):
        env.reset(seed=seed)
        for _ in range(20):
            _, _, terminated, truncated, info = env.step(env.unwrapped.oracle_text())
            if terminated or truncated:
                break
        scores.append(info["score"])
    assert np.mean(scores) >= 0.9, scores


def test_action_only_answers_are_numbers_of_listed_actions(make_env: Any) -> None:
    env = make_env(response_mode="action_only", prompt_version="action_only")
    assert env.action_names == tuple(str(i) for i in range(1, 31))
    obs, _ = env.reset(seed=4)
    assert "\n1. search[" in obs["text"] and "\n2. " not in obs["text"]
    obs, _, _, _, info = env.step("2")  # past the list: invalid
    assert info["parse_ok"] and not info["action_valid"]
    obs, _, _, _, info = env.step("1")
    assert info["page"] == "results" and "\n1. click[back to search]\n2. click[next >]\n3. click[g" in obs["text"]
    assert env.oracle_text().isdigit()


def test_same_seed_and_answers_give_the_same_episode(make_env: Any) -> None:
    a, b = make_env(), make_env()  # two envs in one process share one Chromium
    out = []
    for env in (a, b):
        obs, _ = env.reset(seed=11)
        trace = [obs]
        for _ in range(3):
            trace.append(env.step(env.unwrapped.oracle_text())[0])
        out.append(trace)
    for x, y in zip(*out):
        assert x["text"] == y["text"] and np.array_equal(x["images"], y["images"])


def test_gymnasium_check_env_passes(make_env: Any) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(make_env().unwrapped, skip_render_check=True)


def test_a_missing_browser_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.envs.webshop import browser

    monkeypatch.setattr(browser.shutil, "which", lambda _: None)
    monkeypatch.setenv("VLDAC_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(FileNotFoundError, match=r"apt-get install -y --no-install-recommends chromium.*browser_executable"):
        browser.find_chromium()
    assert browser.find_chromium(__file__) == __file__  # an explicit path that exists is used as given


def test_a_missed_screenshot_frame_is_retried(make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import Error

    env = make_env()
    env.reset(seed=0)
    browser = env.unwrapped._browser
    real, calls = browser.page.screenshot, []

    def flaky(**kwargs: Any) -> bytes:
        calls.append(kwargs)
        if len(calls) == 1:
            raise Error("Page.screenshot: Protocol error (Page.captureScreenshot): Unable to capture screenshot")
        return real(**kwargs)

    monkeypatch.setattr(browser.page, "screenshot", flaky)
    obs, *_ = env.step(act("search[green tea]"))
    assert len(calls) == 2 and obs["images"][1].std() > 10
    monkeypatch.setattr(browser.page, "screenshot", lambda **_: (_ for _ in ()).throw(Error("Target closed")))
    with pytest.raises(Error, match="Target closed"):  # other errors are not retried: the pool heals them
        env.step(act("click[back to search]"))


def test_the_page_is_replaced_every_few_episodes(make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.envs.webshop import env as webshop_env

    monkeypatch.setattr(webshop_env, "PAGE_EPISODES", 2)
    env = make_env()
    pages = []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        pages.append(env.unwrapped._browser.page)
        assert obs["images"][0].std() > 10
    # Resets 2 and 4 open a fresh page (Playwright frees a context's requests only when it closes).
    assert pages[0] is not pages[1] and pages[1] is pages[2] and pages[2] is not pages[3]
    assert pages[0].is_closed() and not pages[3].is_closed()

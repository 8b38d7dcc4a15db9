"""``WebShopEnv``: shopping on a local web store, seen through headless Chromium (docs/environments.md#webshop).

Observation ``{"images": uint8 [k, H, W, 3], "num_images": int, "text": str}`` like
:class:`~vldac_lightning.envs.language.LanguageEnv`: the last ``image_history`` screenshots and a
prompt with the instruction and the page's actions. The action is the raw generated text:

* ``response_mode="json"``: ``{"thoughts": ..., "action": "search[<query>]"}`` on the search page,
  ``"click[<button>]"`` elsewhere (a button's label, case-insensitive, as listed in the prompt).
* ``response_mode="action_only"`` (constrained decoding): the prompt numbers the page's actions
  and the answer is a number from the fixed set ``"1".."max_choices"``. The search page offers one
  search, with the instruction as the query.

Episode rules are WebShop's text env's: ``search[...]`` runs from any page (``search_anywhere``;
the prompt lists it on the search page only, as WebShop's available actions do), ``Next >`` is on
every results page, "Buy Now" ends the episode (terminated) with the store's score as reward
(:mod:`.reward`) and pays once: a step after it changes nothing and pays 0. An episode that buys
nothing is truncated at ``max_episode_steps`` with reward 0 (50 here, as the paper; WebShop's
published baselines use 100). Success = score 1.

Invalid actions (unparseable text, no such button, a search with ``search_anywhere=False`` off the
search page) do not change the page and cost ``parse_failure_penalty`` (0 by default: WebShop's
own behaviour); ``parse_failure="random"`` plays a random listed action instead.

The store: WebShop's own data with ``data_dir``, else ``num_products`` generated products made as
hard as ``catalog`` says (:class:`.catalog.CatalogOptions`); ``title_nouns`` picks how the reward
finds title nouns (:func:`.reward.noun_tagger`).

Which goal a reset plays: seeds below 1e9 index the training goals, seeds from 1e9 the
evaluation goals (goal = seed % 1e9 % split size), as ALFWorld's env does.
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any
from urllib.parse import urlencode

import gymnasium as gym
import numpy as np

from ..language import (
    PARSE_FAILURE_POLICIES,
    RESPONSE_MODES,
    check_choice,
    language_spaces,
)
from ..parsing import action_value
from ..prompts import load_prompt
from .search import PRODUCT_WINDOW

__all__ = ["EVAL_SEED_OFFSET", "WebShopEnv"]

EVAL_SEED_OFFSET = 1_000_000_000  # == envs.pool._EVAL_OFFSET
PAGE_TEXT_CHARS = 1500  # the visible text a state-in-text prompt carries
# Episodes per browser page: a fresh page (and context) bounds the requests Playwright keeps
# alive (Browser.new_page) to this many episodes, at ~0.1-0.2 s per replacement.
PAGE_EPISODES = 16
_ACTION = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)
_PAGE_NAMES = {"search": "the search page", "results": "a page of search results", "item": "a product page",
               "sub": "a product detail page", "done": "the order confirmation"}


class WebShopEnv(gym.Env, gym.utils.RecordConstructorArgs):
    """WebShop as a language env (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        num_products: int = 20000,
        catalog_seed: int = 0,
        num_eval_goals: int = 500,
        viewport: tuple[int, int] | list[int] = (640, 480),
        image_size: tuple[int, int] | list[int] | None = None,
        max_choices: int = 30,
        browser_executable: str | None = None,
        prompt_version: str = "rl4vlm",
        image_history: int = 2,
        max_episode_steps: int = 50,
        parse_failure: str = "penalty",
        parse_failure_penalty: float = 0.0,
        response_mode: str = "json",
        state_in_text: bool = False,
        search_anywhere: bool = True,
        title_nouns: str = "words",
        catalog: dict[str, Any] | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, **{k: v for k, v in locals().items() if k not in ("self", "__class__")})
        super().__init__()
        check_choice("parse_failure", parse_failure, PARSE_FAILURE_POLICIES)
        check_choice("response_mode", response_mode, RESPONSE_MODES)
        for name, value, lo in (("image_history", image_history, 1), ("max_episode_steps", max_episode_steps, 1),
                                ("max_choices", max_choices, 1), ("num_eval_goals", num_eval_goals, 1)):
            if int(value) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {value}")
        viewport = tuple(int(v) for v in viewport)
        size = tuple(int(v) for v in (image_size or viewport))
        if len(viewport) != 2 or len(size) != 2 or min(*viewport, *size) < 32:
            raise ValueError(f"viewport and image_size are [width, height] of at least 32; got {viewport}, {size}")
        from .browser import Browser
        from .catalog import catalog_options
        from .reward import noun_tagger
        from .server import StoreServer
        from .store import load_store

        nouns = noun_tagger(title_nouns)
        self.store = load_store(data_dir or None, int(num_products), int(catalog_seed), int(num_eval_goals),
                                catalog_options(catalog))
        self.search_anywhere = bool(search_anywhere)
        self.max_choices = int(max_choices)
        self.prompt = load_prompt("webshop", prompt_version)
        self.image_history = int(image_history)
        self.max_episode_steps = int(max_episode_steps)
        self.parse_failure = parse_failure
        self.parse_failure_penalty = float(parse_failure_penalty)
        self.response_mode = response_mode
        self.state_in_text = bool(state_in_text)
        self._size = None if size == viewport else size
        # Constrained decoding's answer alphabet (EnvPool.action_names); JSON mode ignores it.
        self.action_names: tuple[str, ...] = tuple(str(i) for i in range(1, self.max_choices + 1))
        w, h = size
        k = self.image_history
        self.observation_space, self.action_space = language_spaces(k, h, w)
        self._frames: deque[np.ndarray] = deque(maxlen=k)
        self._blank = np.zeros((h, w, 3), np.uint8)
        self._rng = np.random.default_rng()
        self._goal: dict[str, Any] | None = None
        self._page: dict[str, Any] = {}
        self._obs: dict[str, Any] | None = None
        self._steps, self._return, self._score = 0, 0.0, 0.0
        self._finished = False
        self._split = "train"
        self._resets = 0
        self._server = StoreServer(self.store, nouns)
        try:
            self._browser = Browser(*viewport, executable=browser_executable)
        except Exception:
            self._server.close()
            raise

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0x5709])
            self._split = "eval" if seed >= EVAL_SEED_OFFSET else "train"
            index = int(seed) % EVAL_SEED_OFFSET
        else:  # no seed: the next goal of the seeded stream
            index = int(self._rng.integers(2**31))
        if options and "goal_index" in options:
            index = int(options["goal_index"])
        goals = self.store.split(self._split == "eval")
        self._goal = goals[index % len(goals)]
        self._goal_index = index % len(goals)
        self._sid = self._server.new_session(self._goal)
        self._resets += 1
        if self._resets % PAGE_EPISODES == 0:
            self._browser.new_page()
        self._browser.goto(f"{self._server.url}/{self._sid}")
        self._frames.clear()
        self._observe()
        self._steps, self._return, self._score = 0, 0.0, 0.0
        self._finished = False
        return self._fresh_obs(), self._info(parse_ok=True, action_valid=True)

    def step(self, action: str) -> tuple[dict, float, bool, bool, dict]:
        if self._obs is None or self._goal is None:
            raise RuntimeError("call reset() before step()")
        if self._finished:  # bought: the order is final and is paid once
            return self._fresh_obs(), 0.0, True, False, self._info(parse_ok=True, action_valid=False)
        chosen, parse_ok = self._parse(action)
        valid = chosen is not None
        if not valid and self.parse_failure == "random":
            choices = self.choices()
            chosen = choices[int(self._rng.integers(len(choices)))]
        reward = 0.0 if valid else self.parse_failure_penalty
        if chosen is not None:
            self._act(chosen)
            self._observe()
        terminated = self._page["page"] == "done"
        if terminated:
            self._score = float(self._page["reward"])
            reward += self._score
            self._finished = True
        self._steps += 1
        self._return += reward
        truncated = not terminated and self._steps >= self.max_episode_steps
        info = self._info(parse_ok=parse_ok, action_valid=valid)
        return self._fresh_obs(), float(reward), terminated, truncated, info

    def close(self) -> None:
        for name in ("_browser", "_server"):
            part = getattr(self, name, None)
            if part is not None:
                part.close()
                setattr(self, name, None)
        super().close()

    def render(self) -> np.ndarray:
        return self._frames[-1].copy() if self._frames else self._blank.copy()

    # --- actions ---------------------------------------------------------------------------
    def clickables(self) -> list[str]:
        """The labels ``click[...]`` accepts on the current page, in page order (no duplicates)."""
        labels = [label for label, _ in self._page.get("clickables", []) if label != "search"]
        return list(dict.fromkeys(labels))

    def choices(self) -> list[str]:
        """The page's actions as the prompt lists them (numbered in ``action_only`` mode)."""
        if self._page.get("search"):
            return [f"search[{self._search_query()}]"]
        return [f"click[{label}]" for label in self.clickables()][: self.max_choices]

    def _search_query(self) -> str:
        """The one search ``action_only`` offers: the instruction without its price clause."""
        return re.sub(r",? and price lower than .*$", "", self._goal["instruction_text"])

    def _parse(self, text: str) -> tuple[str | None, bool]:
        """(a valid action string or None, parse_ok)."""
        value = action_value(text, mode=self.response_mode)
        if value is None:
            return None, False
        if self.response_mode == "action_only":
            choices = self.choices()
            # Compared as text: never int() a model's answer (5,000 digits, "²").
            numbers = {str(i): c for i, c in enumerate(choices, 1)}
            return numbers.get(value), True
        match = _ACTION.match(value)
        if match is None:
            return None, True
        verb, arg = match.group(1).lower(), match.group(2).strip()
        if verb == "search":
            searchable = self._page.get("search") or self.search_anywhere
            return (f"search[{arg}]" if arg and searchable else None), True
        label = arg.lower()
        return (f"click[{label}]" if label in self.clickables() else None), True

    def _act(self, action: str) -> None:
        verb, arg = _ACTION.match(action).groups()
        if verb == "search" and self._page.get("search"):
            self._browser.search(arg)  # typed into the search box, as a shopper would
        elif verb == "search":  # WebShop's text env searches from any page: open the results directly
            self._browser.goto(f"{self._server.url}/search_results/{self._sid}?{urlencode({'keywords': arg})}")
        else:
            labels = [label for label, _ in self._page["clickables"]]
            self._browser.click(labels.index(arg))

    # --- observation -----------------------------------------------------------------------
    def _observe(self) -> None:
        self._page = self._browser.read()
        self._frames.append(self._browser.screenshot(self._size))
        n = len(self._frames)
        images = np.stack([*self._frames, *([self._blank] * (self.image_history - n))])
        choices = self.choices()
        selected = [label for label, on in self._page["clickables"] if on]
        fields = {
            "instruction": self._goal["instruction_text"],
            "page": _PAGE_NAMES.get(self._page["page"], self._page["page"]),
            "choices": "\n".join(f"{i}. {c}" for i, c in enumerate(choices, 1)),
            "selected": ", ".join(selected) or "none",
            "page_text": " ".join(self._page["text"].split())[:PAGE_TEXT_CHARS],
            "search_box": self._page["search"],
        }
        names = ["search[...]"] if self._page["search"] else choices
        text = self.prompt.format(fields, n, names, state_in_text=self.state_in_text)
        self._obs = {"images": images, "num_images": n, "text": text}

    def _fresh_obs(self) -> dict[str, Any]:
        """A new observation object each call (the caller keeps it; an unchanged page repeats the data)."""
        return {**self._obs, "images": self._obs["images"].copy()}

    def _info(self, *, parse_ok: bool, action_valid: bool) -> dict[str, Any]:
        return {
            "parse_ok": bool(parse_ok),
            "action_valid": bool(action_valid),
            "success": self._score >= 1.0,
            "score": float(self._score),
            "page": str(self._page.get("page", "")),
            "task_type": str(self._goal["category"]),
            "split": self._split,
            "goal_index": int(self._goal_index),
            "episode_return": float(self._return),
            "episode_length": int(self._steps),
        }

    # --- expert ----------------------------------------------------------------------------
    def oracle_text(self) -> str | None:
        """A scripted expert's next action: search the instruction, open the goal product if
        the 50 results list it (paging with ``Next >``; else the first result), choose the goal
        options, buy. It knows the goal product, not a better query: its score is the ceiling of
        searching the instruction verbatim."""
        if self._goal is None or self._page.get("page") == "done":
            return None
        action = self._expert_action()
        if self.response_mode == "action_only":
            choices = self.choices()
            return str(choices.index(action) + 1) if action in choices else None
        return json.dumps({"thoughts": "Following the scripted expert.", "action": action})

    def _expert_action(self) -> str:
        page, labels = self._page["page"], self.clickables()
        goal = self._goal
        if page == "search":
            return f"search[{self._search_query()}]"
        if page == "results":
            target = goal["asin"].lower()
            if target in labels:
                return f"click[{target}]"
            session = self._server.sessions[self._sid]
            ranked = self.store.search.search(session["keywords"])
            if goal["asin"] in ranked and ranked.index(goal["asin"]) // PRODUCT_WINDOW + 1 > session["page"]:
                return "click[next >]"  # the goal product is on a later page
            products = [lbl for lbl in labels if lbl.upper() in self.store.by_asin]
            return f"click[{products[0]}]" if products else "click[back to search]"
        if page == "sub":
            return "click[< prev]"
        wanted = goal["goal_options"]
        wanted = list(wanted.values()) if isinstance(wanted, dict) else list(wanted)
        selected = {label for label, on in self._page["clickables"] if on}
        for value in wanted:
            if value in labels and value not in selected:
                return f"click[{value}]"
        return "click[buy now]"

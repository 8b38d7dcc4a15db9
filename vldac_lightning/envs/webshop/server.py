"""The web store: a Flask app on 127.0.0.1 (OS-assigned port), WebShop's page flow.

search page → results (10 per page, "Next >" on every results page as in WebShop, "< Prev" from
page 2, "Back to Search") → item page (option
buttons, "Description", "Features", "Reviews", "Buy Now") → done page with the score. Every
clickable element carries ``data-click`` (its lower-cased label, what ``click[...]`` names) and
``<body>`` carries ``data-page`` / ``data-reward`` for the env to read what the page shows.

The server runs in a daemon thread of the env's process (werkzeug's threaded server), so it ends
with that process even when it is killed; :meth:`StoreServer.close` stops it cleanly. Per-session
state (goal, score once bought) lives in :attr:`StoreServer.sessions`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, abort, render_template, request
from werkzeug.serving import WSGIRequestHandler, make_server

from .reward import purchase_reward, title_nouns
from .search import PRODUCT_WINDOW
from .store import Store, swatch

__all__ = ["SUB_PAGES", "StoreServer", "create_app"]

SUB_PAGES = ("Description", "Features", "Reviews")


def _view(product: dict[str, Any]) -> dict[str, Any]:
    color, initials = swatch(product["asin"])
    return {"asin": product["asin"], "title": product["Title"], "price": product["Price"],
            "rating": product.get("Rating", "N.A."), "options": product["options"], "color": color,
            "initials": initials, "description": product["Description"], "bullets": product["BulletPoints"],
            "reviews": product.get("Reviews", [])}


def _options(raw: str | None) -> dict[str, str]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        abort(400)
    if not isinstance(value, dict):
        abort(400)
    return {str(k): str(v) for k, v in value.items()}


def create_app(store: Store, sessions: dict[str, dict[str, Any]],
               nouns: Callable[[str], list[str]] = title_nouns) -> Flask:
    """The store's Flask app over ``store``; ``sessions`` maps session id → {"goal", "reward", ...};
    ``nouns`` finds title nouns for the reward's r_type (:func:`.reward.noun_tagger`)."""
    app = Flask(__name__, template_folder=str(Path(__file__).with_name("templates")))

    def session(sid: str) -> dict[str, Any]:
        if sid not in sessions:
            abort(404)
        return sessions[sid]

    def product(asin: str) -> dict[str, Any]:
        if asin not in store.by_asin:
            abort(404)
        return store.by_asin[asin]

    def page(kind: str, template: str, sid: str, **fields: Any) -> str:
        s = session(sid)
        fields.setdefault("asin", None)
        fields.setdefault("reward", None)
        return render_template(template, page_kind=kind, sid=sid, instruction_text=s["goal"]["instruction_text"],
                               **fields)

    @app.route("/favicon.ico")
    def favicon() -> tuple[str, int]:
        return "", 204

    @app.route("/<sid>")
    def index(sid: str) -> str:
        return page("search", "search_page.html", sid)

    @app.route("/search_results/<sid>")
    def results(sid: str) -> str:
        keywords = request.args.get("keywords", "")
        number = max(request.args.get("page", 1, type=int), 1)
        asins = store.search.search(keywords)
        shown = [_view(store.by_asin[a]) for a in asins[(number - 1) * PRODUCT_WINDOW: number * PRODUCT_WINDOW]]
        session(sid).update(keywords=keywords, page=number, results=[p["asin"] for p in shown])
        return page("results", "results_page.html", sid, products=shown, keywords=keywords, page=number,
                    total=len(asins))

    def item_fields(asin: str) -> dict[str, Any]:
        options = _options(request.args.get("options"))

        def with_option(name: str, value: str) -> str:
            return json.dumps({**options, name: value})

        return {"product": _view(product(asin)), "asin": asin, "options": options,
                "options_json": json.dumps(options), "with_option": with_option,
                "keywords": request.args.get("keywords", ""), "page": request.args.get("page", 1, type=int)}

    @app.route("/item_page/<sid>/<asin>")
    def item(sid: str, asin: str) -> str:
        return page("item", "item_page.html", sid, sub_pages=SUB_PAGES, **item_fields(asin))

    @app.route("/item_sub_page/<sid>/<asin>/<sub>")
    def sub_page(sid: str, asin: str, sub: str) -> str:
        if sub not in SUB_PAGES:
            abort(404)
        return page("sub", "sub_page.html", sid, sub=sub, **item_fields(asin))

    @app.route("/done/<sid>/<asin>")
    def done(sid: str, asin: str) -> str:
        s, bought = session(sid), product(asin)
        options = _options(request.args.get("options"))
        if s.get("reward") is None:  # the first purchase counts; a reload shows the same score
            s["reward"], s["reward_info"] = purchase_reward(bought, s["goal"], store.prices[asin], options, nouns)
            s["bought"] = asin
        return page("done", "done_page.html", sid, product=_view(bought), asin=asin, options=options,
                    reward=s["reward"])

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log: a line per page view would flood the training log."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class StoreServer:
    """The store app served on 127.0.0.1:<free port> from a daemon thread."""

    def __init__(self, store: Store, nouns: Callable[[str], list[str]] = title_nouns) -> None:
        self.store = store
        self.sessions: dict[str, dict[str, Any]] = {}
        self._server = make_server("127.0.0.1", 0, create_app(store, self.sessions, nouns), threaded=True,
                                   request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webshop-server", daemon=True)
        self._thread.start()

    def new_session(self, goal: dict[str, Any]) -> str:
        """A fresh session for ``goal``; returns its id (old sessions are dropped: one env, one shopper)."""
        self.sessions.clear()
        sid = uuid.uuid4().hex[:10]
        self.sessions[sid] = {"goal": goal, "reward": None}
        return sid

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()

"""The quart-trio application: pages, client script, health and statistics.

Everything that is not on the hot path lives here, served by hypercorn (see
``handoff.py``). Errors are answered as ``{"error": …, "code": …}`` JSON, like the
data plane's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from quart import Response, request, send_from_directory
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..core.errors import ClientError
from ..core.topics import check_event_type, check_topic
from ..hub import Hub
from .metrics import render

STATIC_DIR = Path(__file__).parent / "static"
#: The runnable examples' pages, served at /examples/ when the broker runs from a checkout.
EXAMPLES_DIR = Path(__file__).parents[2] / "examples"


def _json(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(
        body, status=status, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def create_app(
    hub: Hub,
    *,
    extra_stats: Callable[[], dict[str, Any]] | None = None,
    metrics: CollectorRegistry | None = None,
) -> QuartTrio:
    """Build the app.

    Args:
        hub: the node's hub (for ``/stats``).
        extra_stats: more ``/stats`` fields from the server (connection counts …).
        metrics: the Prometheus registry served at ``/metrics``.
    """
    app = QuartTrio("broker", static_folder=None)

    @app.after_request
    async def revalidate_static(response: Response) -> Response:
        # Pages and the client script must not outlive an upgrade in browser caches:
        # browsers revalidate with Last-Modified/ETag instead of keeping them 12 hours.
        if "max-age" in response.headers.get("Cache-Control", ""):
            response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/")
    async def index() -> Any:
        return await send_from_directory(STATIC_DIR, "index.html")

    @app.get("/client.js")
    async def client_script() -> Any:
        return await send_from_directory(STATIC_DIR, "broker-client.js", mimetype="text/javascript")

    @app.get("/static/<path:name>")
    async def static_file(name: str) -> Any:
        return await send_from_directory(STATIC_DIR, name)

    @app.get("/examples/<path:name>")
    async def example_file(name: str) -> Any:
        if name.endswith("/") or (EXAMPLES_DIR / name).is_dir():
            name = name.rstrip("/") + "/index.html"
        return await send_from_directory(EXAMPLES_DIR, name)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        # Load balancers stop sending new clients here as soon as shutdown begins.
        if hub.closed:
            return _json({"status": "shutting down"}, 503)
        return _json({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        if metrics is None:
            return _json({"error": "metrics are off", "code": "not_found"}, 404)
        return Response(render(metrics), content_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats() -> Response:
        payload = asdict(hub.statistics())
        if extra_stats is not None:
            payload.update(extra_stats())
        return _json(payload)

    @app.delete("/topics/<path:topic>/retained")
    async def clear_retained(topic: str) -> Response:
        try:
            check_topic(topic)
            kind = request.args.get("event")
            event_type = check_event_type(kind) if kind is not None else ...
        except ClientError as error:
            return _json({"error": error.message, "code": error.code}, error.status)
        cleared = hub.clear_retained(topic, event_type)
        return _json({"topic": topic, "cleared": cleared})

    @app.delete("/topics/<path:topic>")
    async def forget_topic(topic: str) -> Response:
        try:
            check_topic(topic)
        except ClientError as error:
            return _json({"error": error.message, "code": error.code}, error.status)
        return _json({"topic": topic, "forgotten": hub.forget(topic)})

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        response = _json(
            {"error": error.description or error.name, "code": code}, error.code or 500
        )
        if error.code == 405:
            allow = getattr(error, "valid_methods", None)
            if allow:
                response.headers["Allow"] = ", ".join(allow)
        return response

    return app

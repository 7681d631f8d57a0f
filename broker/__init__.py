"""broker: a Trio pub/sub broker that streams events to browsers (SSE, WebSocket).

The package is drawn in layers; each folder is one, and imports point down only
(``tests/unit/test_layers.py`` enforces it)::

    cli.py  server.py  config.py  supervisor.py   boot: parse settings, compose, start, stop
    ----------------------------------------------------------------------------------------
    control/   off the hot path: quart-trio app, hypercorn hand-off, metrics, static files
    edge/      the public port: listener, HTTP/1.1 data plane, WebSocket, ASGI adapter,
               routes, and the policy a request passes (auth, CORS, limits)
    engines/   where events are kept      |  cluster/   the gossip mesh: peer links,
               (redis)                    |             membership, replication
    hub/       topics, history, subscribers; the Event record; publish and subscribe;
               the engine interface an engine implements
    wire/      sans-IO formats: SSE frames, WebSocket frames, publish bodies, commands
    core/      sans-IO vocabulary: errors, topic names, position ids, publish items

``server.py`` alone knows how the parts start and stop. ``engines/`` and ``cluster/`` stand
side by side and do not import each other. ``config.py`` is read by the boot modules only;
components take the few settings they use as keyword arguments.
"""

from .config import Settings, load_settings
from .core.errors import BrokerError
from .hub import Hub, open_hub
from .server import RunningServer, serve

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "Hub",
    "RunningServer",
    "Settings",
    "load_settings",
    "open_hub",
    "serve",
]

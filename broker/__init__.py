"""broker: a Trio pub/sub broker that streams events to browsers (SSE, WebSocket)."""

from .config import Settings, load_settings
from .errors import BrokerError
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

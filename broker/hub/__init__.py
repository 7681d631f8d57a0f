"""hub: topics, their histories and subscribers; publish, subscribe, close.

The :class:`Hub` facade (``facade``) is composed of its state (``state``), publishing,
replication from peers, subscriptions and retention, one module each; ``subscriber`` delivers
to one connection (write-through with an overflow ``mailbox``). The theory of operation is in
``facade``'s docstring.
"""

from .facade import (
    DEFAULT_RETRY_MS,
    Hub,
    HubStatistics,
    NotSupported,
    PublishItem,
    Store,
    Unavailable,
    _Topic,
    open_hub,
)

__all__ = [
    "DEFAULT_RETRY_MS",
    "Hub",
    "HubStatistics",
    "NotSupported",
    "PublishItem",
    "Store",
    "Unavailable",
    "_Topic",
    "open_hub",
]

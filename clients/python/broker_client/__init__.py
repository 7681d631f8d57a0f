"""broker_client: a Trio client for the broker (publish over HTTP, subscribe over SSE or WebSocket).

Quick start::

    import trio
    from broker_client import BrokerClient, Event

    async def main() -> None:
        async with BrokerClient("http://127.0.0.1:8080") as client:
            async with client.subscribe("jobs") as events:
                await client.publish("jobs", {"progress": 0.4}, event="progress")
                async for item in events:
                    if isinstance(item, Event):
                        print(item.topic, item.event, item.data)
                        break

    trio.run(main)

Everything public is re-exported here; the ``_*`` modules are private.
"""

from ._client import DEFAULT_URL as DEFAULT_URL
from ._client import BrokerClient as BrokerClient
from ._client import publish as publish
from ._errors import BrokerError as BrokerError
from ._errors import BrokerTimeout as BrokerTimeout
from ._errors import BrokerUnavailable as BrokerUnavailable
from ._errors import ClientError as ClientError
from ._errors import ProtocolError as ProtocolError
from ._errors import ServerError as ServerError
from ._events import Dropped as Dropped
from ._events import Ended as Ended
from ._events import Event as Event
from ._events import FailedOver as FailedOver
from ._events import Notice as Notice
from ._events import Reconnecting as Reconnecting
from ._events import Reset as Reset
from ._events import TransportChanged as TransportChanged
from ._publish import PublishItem as PublishItem
from ._sse import ServerSentEvent as ServerSentEvent
from ._sse import SSEParser as SSEParser
from ._subscription import Subscription as Subscription

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "BrokerClient",
    "BrokerError",
    "BrokerTimeout",
    "BrokerUnavailable",
    "ClientError",
    "Dropped",
    "Ended",
    "Event",
    "FailedOver",
    "Notice",
    "ProtocolError",
    "PublishItem",
    "Reconnecting",
    "Reset",
    "SSEParser",
    "ServerError",
    "ServerSentEvent",
    "Subscription",
    "TransportChanged",
    "publish",
]

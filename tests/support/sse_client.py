"""A raw-socket SSE reader for tests: exact bytes, and full control over reading."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: str
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseStream:
    """One open SSE response over a real socket."""

    stream: trio.SocketStream
    status: int
    headers: dict[str, str]
    buffer: bytes = b""
    raw: bytearray = field(default_factory=bytearray)
    last_id: str | None = None

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            return False
        self.raw += data
        self.buffer += data
        return True

    async def next_event(self) -> SseEvent | None:
        """The next dispatched event (comments skipped), or None at the end of the stream."""
        data: list[str] = []
        event_type: str | None = None
        retry: int | None = None
        while True:
            while b"\n" not in self.buffer:
                if not await self._fill():
                    return None
            line, self.buffer = self.buffer.split(b"\n", 1)
            text = line.decode("utf-8")
            if text == "":
                if data:
                    return SseEvent(self.last_id, event_type, "\n".join(data), retry)
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id":
                self.last_id = value
            elif name == "retry":
                retry = int(value)

    async def events(self, count: int, *, skip_broker: bool = True) -> list[SseEvent]:
        out: list[SseEvent] = []
        while len(out) < count:
            event = await self.next_event()
            if event is None:
                raise EOFError(f"stream ended after {len(out)} events")
            if skip_broker and (event.event or "").startswith("broker."):
                continue
            out.append(event)
        return out

    async def aclose(self) -> None:
        await self.stream.aclose()


async def open_sse(url: str, path: str, headers: dict[str, str] | None = None) -> SseStream:
    """Send ``GET path`` and read the response head."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    buffer = b""
    raw = bytearray()
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError("closed before the response head")
        buffer += data
        raw += data
    head, rest = buffer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return SseStream(stream, status, parsed, rest, raw)

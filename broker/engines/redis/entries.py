"""What the broker keeps in Redis, and the server-side publish (sans-IO).

Keys, per topic, all with the hash tag ``{<topic>}`` so a topic lives on one Redis Cluster
slot (topic names cannot contain braces, so the tag is exactly the topic)::

    <prefix>:{<topic>}        the topic's history: a Stream, XADD ... MAXLEN ~ history_size
    <prefix>:{<topic>}:meta   a Hash: "r:<type>" the retained event per type, "final" the
                              event that closed the topic (both survive stream trimming)

and one notification channel per topic, named like the stream key (``PUBLISH``, or
``SPUBLISH`` on Redis Cluster so the message stays on the topic's shard). Each stored event
is announced on it as ``<id of the entry before it>\n<entry id>\n<flags>\n<ms>\n<type>\n
<data>``: a node whose last entry of the topic is that predecessor delivers the event
straight from the message; any other node (it missed a message, it is catching up, Redis
restarted) reads the stream from its last entry instead. The chain of predecessor ids is
what makes the message safe to use: an event is only taken from a message when it is
exactly the next entry of the stream, so a lost, late or repeated message cannot lose,
reorder or repeat an event.

A stream entry has four fields: ``f`` flags (1 JSON, 2 retained, 4 final), ``t`` the
publish time in ms (for ``since``), ``e`` the event type ("" for none), ``d`` the data.

:data:`PUBLISH_LUA` is the only writer. One call stores a whole batch atomically: it first
checks that no topic is closed, then appends every event, records retained and final
events, and announces each event on its topic's channel. Redis runs a script to
completion without interleaving other commands, so a batch is all or nothing (the checks
come before the first write, so a refused batch writes nothing; the messages go out after
the writes). On Redis Cluster one script can only touch one slot, so a batch there names
a single topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ...hub.events import Event
from . import ids

FLAG_JSON: Final = 1
FLAG_RETAIN: Final = 2
FLAG_FINAL: Final = 4

#: The error reply of a publish to a closed topic: ``BROKER_CLOSED <topic index>``.
CLOSED_ERROR: Final = "BROKER_CLOSED"

# KEYS: stream, meta for each topic of the batch.
# ARGV: maxlen, publish command, time ms, then 4 per event: topic index, flags, type, data.
PUBLISH_LUA: Final = """
local maxlen, pub, now = ARGV[1], ARGV[2], ARGV[3]
for t = 1, #KEYS / 2 do
  if redis.call('HEXISTS', KEYS[2 * t], 'final') == 1 then
    return redis.error_reply('BROKER_CLOSED ' .. t)
  end
end
local ids, previous, messages = {}, {}, {}
for i = 4, #ARGV, 4 do
  local t, flags, etype, data = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = KEYS[2 * t - 1]
  if previous[t] == nil then
    local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    previous[t] = newest[1] and newest[1][1] or '0-0'
  end
  local id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*',
                        'f', flags, 't', now, 'e', etype, 'd', data)
  ids[#ids + 1] = id
  local packed = id .. '\\n' .. flags .. '\\n' .. now .. '\\n' .. etype .. '\\n' .. data
  local f = tonumber(flags)
  if f % 4 >= 2 then redis.call('HSET', KEYS[2 * t], 'r:' .. etype, packed) end
  if f % 8 >= 4 then redis.call('HSET', KEYS[2 * t], 'final', packed) end
  messages[#messages + 1] = {key, previous[t] .. '\\n' .. packed}
  previous[t] = id
end
for _, message in ipairs(messages) do redis.call(pub, message[1], message[2]) end
return ids
"""


#: The message that says a topic's meta hash (or the whole topic) changed.
META_CHANGED: Final = "meta"

# KEYS: stream, meta. ARGV: "forget" or "clear", the event type ("*": every type; "" for
# untyped), the publish command. Announces "meta" so every node reloads.
ADMIN_LUA: Final = """
local n = 0
if ARGV[1] == 'forget' then
  n = redis.call('DEL', KEYS[1], KEYS[2])
elseif ARGV[2] == '*' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    if string.sub(field, 1, 2) == 'r:' then n = n + redis.call('HDEL', KEYS[2], field) end
  end
else
  n = redis.call('HDEL', KEYS[2], 'r:' .. ARGV[2])
end
redis.call(ARGV[3], KEYS[1], 'meta')
return n
"""


def stream_key(prefix: str, topic: str) -> str:
    return f"{prefix}:{{{topic}}}"


def meta_key(prefix: str, topic: str) -> str:
    return f"{prefix}:{{{topic}}}:meta"


def flags(*, is_json: bool, retain: bool = False, final: bool = False) -> int:
    return (
        (FLAG_JSON if is_json else 0)
        | (FLAG_RETAIN if retain else 0)
        | (FLAG_FINAL if final else 0)
    )


def publish_arguments(
    prefix: str,
    history_size: int,
    publish_command: str,
    now_ms: int,
    events: Sequence[tuple[str, str, str | None, int]],
) -> tuple[list[str], list[str], list[str]]:
    """The keys and arguments of one :data:`PUBLISH_LUA` call.

    Args:
        events: ``(topic, data, event type, flags)`` in publish order.

    Returns:
        ``(keys, args, topics)``: ``topics`` in the order of their keys.
    """
    index: dict[str, int] = {}
    keys: list[str] = []
    args = [str(max(1, history_size)), publish_command, str(now_ms)]
    for topic, data, event_type, event_flags in events:
        position = index.get(topic)
        if position is None:
            position = index[topic] = len(index) + 1
            keys += [stream_key(prefix, topic), meta_key(prefix, topic)]
        args += [str(position), str(event_flags), event_type or "", data]
    return keys, args, list(index)


def event_from_fields(
    topic: str, topic_tag: str, entry_id: str, fields: Mapping[str, Any]
) -> Event:
    """The event a stream entry holds (its id is its single-topic token).

    Raises:
        ValueError: an entry this broker did not write.
    """
    packed = ids.pack(entry_id)
    entry_flags = int(fields["f"])
    return Event(
        topic=topic,
        event_type=fields.get("e") or None,
        data=fields["d"],
        is_json=bool(entry_flags & FLAG_JSON),
        origin=topic,
        seq=packed,
        index=0,
        event_id=ids.token(topic_tag, packed),
        published_at=int(fields["t"]) / 1000,
        retain=bool(entry_flags & FLAG_RETAIN),
        final=bool(entry_flags & FLAG_FINAL),
    )


def event_from_meta(topic: str, topic_tag: str, value: str) -> Event:
    """A retained or final event as the meta hash keeps it.

    Raises:
        ValueError: a value this broker did not write.
    """
    entry_id, entry_flags, published, event_type, data = value.split("\n", 4)
    return event_from_fields(
        topic, topic_tag, entry_id, {"f": entry_flags, "t": published, "e": event_type, "d": data}
    )


def parse_message(topic: str, topic_tag: str, message: str) -> tuple[int, Event]:
    """A topic's notification: the packed id of the entry before the event, and the event.

    Raises:
        ValueError: a message this broker did not write.
    """
    previous, _, packed = message.partition("\n")
    return ids.pack(previous), event_from_meta(topic, topic_tag, packed)


def meta_events(
    topic: str, topic_tag: str, meta: Mapping[str, str]
) -> tuple[dict[str | None, Event], Event | None]:
    """The retained events (by type) and the final event of a topic's meta hash."""
    retained: dict[str | None, Event] = {}
    final = None
    for name, value in meta.items():
        if name == "final":
            final = event_from_meta(topic, topic_tag, value)
        elif name.startswith("r:"):
            event = event_from_meta(topic, topic_tag, value)
            retained[event.event_type] = event
    return retained, final

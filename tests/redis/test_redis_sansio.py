"""The Redis engine's sans-IO parts: ids, URLs, the publish arguments, the cache planner."""

from __future__ import annotations

import pytest

from broker.config import load_settings
from broker.core import positions
from broker.core.errors import BadEventId, ConfigError
from broker.engines.redis import entries, ids
from broker.engines.redis.address import parse_redis_url
from broker.engines.redis.cache import TopicCache, has_everything, plan_start, split_read
from broker.hub.events import Event
from broker.hub.replay import StartAt


def entry(topic: str, ms: int, seq: int = 0, data: str = "x", **flags: bool) -> Event:
    return entries.event_from_fields(
        topic,
        ids.tag(topic),
        f"{ms}-{seq}",
        {"f": str(entries.flags(is_json=False, **flags)), "t": str(ms), "e": "", "d": data},
    )


# -- ids -------------------------------------------------------------------------------


def test_entry_ids_pack_in_order_and_round_trip():
    values = ["0-0", "0-1", "1-0", "1795603659859-0", "1795603659859-7", "1795603659860-0"]
    packed = [ids.pack(v) for v in values]
    assert packed == sorted(packed)
    assert [ids.unpack(p) for p in packed] == values


@pytest.mark.parametrize("topic_count", [1, 3, 8])
def test_positions_round_trip_and_stay_short_and_cors_safe(topic_count):
    topics = {f"jobs/{n}": ids.pack(f"179560365{n}859-{n % 2}") for n in range(topic_count)}
    text = ids.format_positions(topics)
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyz0123456789._")
    assert len(text) <= 16 * topic_count
    parsed = ids.parse_position(text)
    assert ids.requested_positions(topics, parsed) == (topics, True)


def test_mesh_ids_and_redis_ids_never_parse_as_each_other():
    mesh = positions.format_position({"k3j9xq": 26, "p0m2rt": 7})
    redis = ids.format_positions({"t": ids.pack("1795603659859-0")})
    with pytest.raises(BadEventId):
        ids.parse_position(mesh)
    with pytest.raises(BadEventId):
        positions.parse_position(redis)
    for garbage in ["", "x", "abcde_", "abcde_0.abcde_1", "ABCDE_1", "abcde_1_0", "a" * 2000]:
        with pytest.raises(BadEventId):
            ids.parse_position(garbage)


def test_an_id_applies_to_the_topics_it_names():
    text = ids.format_positions({"a": 5 << 64, "b": 6 << 64})
    parsed = ids.parse_position(text)
    assert ids.requested_positions(["a", "c"], parsed) == ({"a": 5 << 64}, True)
    assert ids.requested_positions(["c", "d"], parsed) == ({}, False)  # not this stream's


# -- redis_url ----------------------------------------------------------------------------


def test_redis_urls():
    single = parse_redis_url("redis://user:s3cret@cache:6380/2")
    assert (single.kind, single.nodes, single.db, single.password) == (
        "single",
        (("cache", 6380),),
        2,
        "s3cret",
    )
    assert "s3cret" not in single.redacted()
    cluster = parse_redis_url("redis+cluster://a:7000,b:7001,[::1]")
    assert cluster.kind == "cluster"
    assert cluster.nodes == (("a", 7000), ("b", 7001), ("::1", 6379))
    sentinel = parse_redis_url("rediss+sentinel://s1,s2:26380/mymaster/1")
    assert (sentinel.kind, sentinel.service, sentinel.db, sentinel.tls) == (
        "sentinel",
        "mymaster",
        1,
        True,
    )
    assert sentinel.nodes == (("s1", 26379), ("s2", 26380))
    assert parse_redis_url("unix:///run/redis.sock?db=3").unix_path == "/run/redis.sock"


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",
        "http://x",
        "redis://",
        "redis://h:0",
        "redis://h:99999",
        "redis://a,b",
        "redis+sentinel://s1",
        "redis+cluster://a/0",
        "redis://h/x",
        "unix://relative.sock",
    ],
)
def test_bad_redis_urls(url):
    with pytest.raises(ValueError):
        parse_redis_url(url)


# -- publish arguments ---------------------------------------------------------------------


def test_a_batch_names_each_topic_once_and_keeps_its_order():
    keys, args, order = entries.publish_arguments(
        "b", 100, "PUBLISH", 7, [("x", "1", None, 1), ("y", "2", "t", 0), ("x", "3", None, 0)]
    )
    assert keys == ["b:{x}", "b:{x}:meta", "b:{y}", "b:{y}:meta"]
    assert order == ["x", "y"]
    assert args == ["100", "PUBLISH", "7", "1", "1", "", "1", "2", "0", "t", "2", "1", "0", "", "3"]


def test_meta_values_keep_data_with_line_breaks():
    value = "1795603659859-3\n3\n1795603659859\nprogress\nline1\nline2"
    retained, final = entries.meta_events("t", ids.tag("t"), {"r:progress": value})
    assert final is None
    event = retained["progress"]
    assert (event.data, event.is_json, event.retain, event.seq) == (
        "line1\nline2",
        True,
        True,
        ids.pack("1795603659859-3"),
    )


# -- the cache and the planner --------------------------------------------------------------


def loaded(topic: str, stamps: list[int], *, from_start: bool = False) -> TopicCache:
    cache = TopicCache(topic, 100)
    cache.load([entry(topic, ms) for ms in stamps], from_start=from_start)
    cache.ready = True
    return cache


def test_an_inclusive_read_tells_whether_the_last_entry_is_gone():
    events = [entry("t", ms) for ms in (5, 6, 7)]
    assert split_read(ids.pack("5-0"), events) == (events[1:], False)
    assert split_read(ids.ZERO, events) == (events, False)
    assert split_read(ids.pack("4-0"), events) == (events, True)  # trimmed past it
    assert split_read(ids.pack("9-0"), []) == ([], True)  # Redis restarted empty


def test_resume_exact_evicted_and_unknown():
    cache = loaded("t", [10, 11, 12, 13])
    states: dict = {}
    exact = plan_start({"t": cache}, states, resume_from=ids.token(cache.tag, ids.pack("11-0")))
    assert exact.notice == "broker.start"
    assert [e.data for e in exact.events]
    assert [e.seq for e in exact.events] == [
        ids.pack("12-0"),
        ids.pack("13-0"),
    ]
    evicted = plan_start({"t": cache}, states, resume_from=ids.token(cache.tag, ids.pack("3-0")))
    assert (evicted.notice, evicted.payload["reason"], len(evicted.events)) == (
        "broker.reset",
        "evicted",
        4,
    )
    unknown = plan_start({"t": cache}, states, resume_from=ids.token(cache.tag, ids.pack("99-0")))
    assert (unknown.notice, unknown.payload["reason"], unknown.events) == (
        "broker.reset",
        "unknown",
        [],
    )
    zero = plan_start(
        {"t": loaded("t", [1, 2], from_start=True)}, states, resume_from=ids.token(cache.tag, 0)
    )
    assert zero.notice == "broker.start"
    assert len(zero.events) == 2


def test_multi_topic_replay_carries_every_topic_position():
    a, b = loaded("a", [10, 20]), loaded("b", [15, 25])
    start = ids.format_positions({"a": ids.pack("10-0"), "b": ids.pack("15-0")})
    plan = plan_start({"a": a, "b": b}, {}, resume_from=start)
    assert plan.notice == "broker.start"
    assert [e.topic for e in plan.events] == ["a", "b"]
    assert plan.events[0].id == ids.format_positions({"a": ids.pack("20-0"), "b": ids.pack("15-0")})
    assert plan.events[1].id == ids.format_positions({"a": ids.pack("20-0"), "b": ids.pack("25-0")})


def test_last_n_starts_right_before_the_first_replayed_event():
    cache = loaded("t", [1, 2, 3, 4, 5])
    plan = plan_start({"t": cache}, {}, resume_from=None, start_at=StartAt(last=2))
    assert [e.seq for e in plan.events] == [ids.pack("4-0"), ids.pack("5-0")]
    assert plan.position == ids.token(cache.tag, ids.pack("3-0"))


def test_a_closed_topic_is_over_for_a_client_past_its_final_event():
    final = entry("t", 9, final=True)

    class State:
        retained: dict = {}

    state = State()
    state.final = final  # type: ignore[attr-defined]
    assert has_everything(["t"], {"t": state}, final.id)
    assert not has_everything(["t"], {"t": state}, ids.token(ids.tag("t"), ids.pack("8-0")))
    assert not has_everything(["t"], {"t": state}, "k3j9xq-1")


def test_the_cache_trims_to_its_size_unless_pinned():
    cache = loaded("t", [1])
    for ms in range(2, 250):
        cache.append(entry("t", ms), now=0.0)
    assert len(cache) <= 200
    assert cache.last == ids.pack("249-0")
    pinned = loaded("t", [1])
    pinned.pinned_until = 10.0
    for ms in range(2, 250):
        pinned.append(entry("t", ms), now=5.0)
    assert len(pinned) == 249


# -- [cluster] settings of the redis engine ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[cluster]\nengine = "redis"\n', "needs enabled = true"),
        ('[cluster]\nenabled = true\nengine = "etcd"\n', r"\[cluster\] engine"),
        ('[cluster]\nenabled = true\nengine = "redis"\nredis_url = "redis://h:0"\n', "redis_url"),
        ('[cluster]\nenabled = true\nengine = "redis"\nredis_key_prefix = "a{b}"\n', "prefix"),
        ('[cluster]\nenabled = true\nengine = "redis"\n[history]\nsize = 0\n', "at least 1"),
    ],
)
def test_bad_redis_settings_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_the_redis_engine_needs_no_peer_secret():
    settings = load_settings(
        None,
        environ={
            "BROKER_CLUSTER_ENABLED": "1",
            "BROKER_CLUSTER_ENGINE": "redis",
            "BROKER_CLUSTER_REDIS_URL": "redis+cluster://a:7000,b:7001",
        },
    )
    assert settings.cluster.engine == "redis"

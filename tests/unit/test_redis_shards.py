"""Health per shard on Redis Cluster (``broker/engines/redis/shards.py``), sans-IO."""

from __future__ import annotations

import random

from coredis._utils import hash_slot as coredis_hash_slot

from broker.engines.redis.shards import ShardHealth, hash_slot


def test_hash_slot_matches_redis_and_its_hash_tags():
    assert hash_slot("foo") == 12182  # CLUSTER KEYSLOT foo
    assert hash_slot("123456789") == 0x31C3  # CRC-16/XMODEM check value
    assert hash_slot("{user1000}.following") == hash_slot("{user1000}.followers")
    assert hash_slot("broker:{o}") == hash_slot("o")
    assert hash_slot("foo{}{bar}") != hash_slot("bar")
    assert hash_slot("foo{{bar}}zap") == hash_slot("{bar")


def test_hash_slot_agrees_with_the_client_library():
    rng = random.Random(20)
    for _ in range(500):
        key = "".join(rng.choice("ab{}xé:") for _ in range(rng.randrange(0, 12)))
        assert hash_slot(key) == coredis_hash_slot(key.encode()), key


def _health() -> ShardHealth:
    # three masters as redis-cli --cluster create splits the slots
    return ShardHealth(lambda slot: "a:1" if slot < 5461 else "b:2" if slot < 10923 else "c:3")


def test_a_master_down_touches_only_keys_of_its_slots():
    health = _health()
    keys = {name: f"p:{{{name}}}" for name in ("x0", "x1", "x2", "x3", "x4", "x5", "foo")}
    assert health.node_of("p:{foo}") == "c:3"  # slot 12182
    assert health.first_down(keys.values()) is None
    assert health.mark_down("c:3", now=1.0)
    assert not health.mark_down("c:3", now=2.0)  # already down: no second notice
    assert health.down == {"c:3": 1.0}
    on_c = health.on("c:3", keys.items())
    assert "foo" in on_c
    for name, key in keys.items():
        assert health.is_down(key) == (name in on_c)
    assert health.first_down([keys["foo"]]) == "c:3"
    up = [key for name, key in keys.items() if name not in on_c]
    assert up
    assert health.first_down(up) is None
    assert health.mark_up("c:3")
    assert not health.mark_up("c:3")
    assert not health.is_down(keys["foo"])


def test_nothing_down_asks_no_slot_owner():
    asked: list[int] = []
    health = ShardHealth(lambda slot: asked.append(slot) or "a:1")
    assert not health.is_down("p:{x}")
    assert health.first_down(["p:{x}", "p:{y}"]) is None
    assert asked == []  # the hot path stays free while every shard is up

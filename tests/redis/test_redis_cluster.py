"""The Redis engine suite against a local 3-master Redis Cluster (slow: cluster setup)."""

from __future__ import annotations

import pytest

from tests.redis import scenarios
from tests.redis.conftest import RedisCluster, needs_redis

pytestmark = [needs_redis, pytest.mark.slow]


async def test_publish_on_a_reaches_b_and_c_once_in_order(redis_cluster, key_prefix):
    await scenarios.fan_out(redis_cluster.url, key_prefix)


async def test_subscriber_moves_to_another_node_and_misses_nothing(redis_cluster, key_prefix):
    await scenarios.resume_elsewhere(redis_cluster.url, key_prefix)


async def test_batch_is_atomic_within_one_slot(redis_cluster, key_prefix):
    await scenarios.batch_atomic(redis_cluster.url, key_prefix, clustered=True)


async def test_master_killed_and_restarted_mid_stream(redis_cluster: RedisCluster, key_prefix):
    master = redis_cluster.node_for("o")  # the shard of the topic the scenario publishes to

    def restart() -> None:
        master.start()
        redis_cluster.wait_ok()

    await scenarios.outage(redis_cluster.url, key_prefix, kill=master.kill, restart=restart)

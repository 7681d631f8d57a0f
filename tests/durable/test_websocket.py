"""WebSocket publishes on the durable store: acknowledged once committed, kept across restarts."""

from __future__ import annotations

import json

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.durable.support import replay, sleep_until
from tests.support.servers import open_broker_server


async def next_json(ws):
    return json.loads(await ws.get_message())


async def test_websocket_publish_is_acknowledged_after_its_commit_and_survives(tmp_path):
    tables = {
        "storage": {"kind": "durable", "path": str(tmp_path / "data")},
        "websocket": {"allow_publish": True},
    }
    with trio.fail_after(20):
        async with open_broker_server(**tables) as server:
            url = server.url.replace("http://", "ws://") + "/topics/p/ws"
            async with open_websocket_url(url) as ws:
                await next_json(ws)  # broker.start
                for ref in range(3):
                    await ws.send_message(
                        json.dumps({"op": "publish", "topic": "p", "data": ref, "ref": ref})
                    )
                messages = [await next_json(ws) for _ in range(6)]
                acks = [m["data"] for m in messages if m["event"] == "broker.ack"]
                assert [a["ref"] for a in acks] == [0, 1, 2]
                journal = server.hub.journal
                assert journal.committed_events == 3  # all three went through the store
        async with open_broker_server(**tables) as server:
            first = acks[0]["id"]
            notice, events = await replay(server.url, "p", first, acks[-1]["id"])
            assert notice.event == "broker.start"
            assert [e.data for e in events] == ["1", "2"]


async def test_a_closed_topic_added_over_websocket_after_expiry_stays_closed(tmp_path):
    tables = {
        "storage": {"kind": "durable", "path": str(tmp_path / "data"), "topic_idle_seconds": 0.1},
    }
    with trio.fail_after(20):
        async with open_broker_server(**tables) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/topics/c?final=1", content="end")).status_code == 202
                await sleep_until(lambda: "c" not in server.hub._topics)
                url = server.url.replace("http://", "ws://") + "/topics/other/ws"
                async with open_websocket_url(url) as ws:
                    await next_json(ws)
                    await ws.send_message(
                        json.dumps({"op": "subscribe", "topics": ["c"], "ref": 1})
                    )
                    assert (await next_json(ws))["event"] == "broker.ack"
                    refused = await client.post("/topics/c", content="again")
                    assert refused.status_code == 409, refused.text

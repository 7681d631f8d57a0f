"""Form publishing and the 415 guidance, with the real curl against a real broker.

``curl -d ...`` sends ``application/x-www-form-urlencoded``: the first thing a newcomer
types must either publish or say exactly what to send instead.
"""

import shlex

import httpx
import trio

from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse


async def curl(*args: str) -> tuple[int, str]:
    """Run curl; return the HTTP status and the body."""
    done = await trio.run_process(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], capture_stdout=True, check=True
    )
    body, _, status = done.stdout.decode().rpartition("\n")
    return int(status), body


async def test_curl_d_without_data_says_what_to_send_and_data_publishes():
    with trio.fail_after(15):
        async with open_broker_server() as server:
            url = f"{server.url}/topics/jobs/7"
            stream = await open_sse(server.url, "/topics/jobs/7/events")
            try:
                assert (await stream.next_event()).event == "broker.start"
                status, body = await curl("-d", "hello", url)
                assert status == 400
                assert "needs a data field: curl -d data=hello" in body
                status, body = await curl("-d", "data=hello", url)
                assert status == 202, body
                event = await stream.next_event()
                assert (event.event, event.data) == (None, "hello")
                # Fields: event type, text with line breaks and non-ASCII, final closes.
                status, body = await curl(
                    "--data-urlencode", "data=값\nline two", "-d", "event=progress", url
                )
                assert status == 202, body
                event = await stream.next_event()
                assert (event.event, event.data) == ("progress", "값\nline two")
                status, body = await curl("-d", "data=done&final=on", url + "?event=progress")
                assert status == 202, body
                event = await stream.next_event()
                assert (event.event, event.data) == ("progress", "done")
                assert (await stream.next_event()).event == "broker.end"
            finally:
                await stream.aclose()
            status, body = await curl("-d", "data=late", url)
            assert status == 409


async def test_every_415_shows_a_curl_line_that_works():
    with trio.fail_after(15):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/topics/a/b/events")
            try:
                await stream.next_event()
                for content_type in ("image/png", "text/plain; charset=latin-1"):
                    status, body = await curl(
                        "-H", f"Content-Type: {content_type}", "--data-binary", "x",
                        f"{server.url}/topics/a/b",
                    )  # fmt: skip
                    assert status == 415
                    message = httpx.Response(415, content=body).json()["error"]
                    assert "application/x-www-form-urlencoded" in message
                    line = message.split("for example: ", 1)[1]
                    assert line == f"curl -d data=hello {server.url}/topics/a/b"
                    status, _ = await curl(*shlex.split(line)[1:])
                    assert status == 202
                    assert (await stream.next_event()).data == "hello"
            finally:
                await stream.aclose()
            status, body = await curl("-d", "x=1", f"{server.url}/publish")
            assert status == 415
            line = httpx.Response(415, content=body).json()["error"].split("for example: ", 1)[1]
            status, body = await curl(*shlex.split(line.replace("127.0.0.1:8080", "x"))[1:])
            assert status == 202, body


async def test_a_form_on_a_connection_the_control_plane_serves():
    """After a page, the same connection is hypercorn's: a form publish works there too."""
    with trio.fail_after(15):
        async with (
            open_broker_server() as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            answer = await client.post("/topics/t", data={"data": "via form", "retain": "1"})
            assert answer.status_code == 202, answer.text
            missing = await client.post("/topics/t", data={"date": "typo"})
            assert missing.status_code == 400
            assert "data field" in missing.json()["error"]
            unsupported = await client.post(
                "/topics/t", content=b"x", headers={"Content-Type": "image/png"}
            )
            assert unsupported.status_code == 415
            assert "curl -d data=hello http://" in unsupported.json()["error"]
            stream = await open_sse(server.url, "/topics/t/events")
            try:
                event = await stream.next_event()
                while event.event and event.event.startswith("broker."):
                    event = await stream.next_event()
                assert event.data == "via form"  # retained, so a new subscriber gets it
            finally:
                await stream.aclose()

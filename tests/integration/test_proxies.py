"""The deployment recipes of docs/deploy/ against the real Debian programs.

Each proxy runs the configuration file the documentation gives, with its ports replaced by
free ones, in front of a real broker whose heartbeat is short. Through it: events arrive
one by one (no buffering), heartbeats arrive (so they keep idle streams alive),
``Last-Event-ID`` reaches the broker (exact resume), a WebSocket upgrade works, and the
proxy's idle timeouts are above the broker's default heartbeat. The systemd unit is checked
with ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.support.servers import ROOT, open_broker_server

DEPLOY = ROOT / "docs" / "deploy"
HEARTBEAT_SECONDS = 0.2
DEFAULT_HEARTBEAT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(f"/usr/sbin/{name}")


# -- each proxy: its documented file, templated, and how to run it as any user ---------------


def nginx_command(tmp_path: Path, broker_port: int, port: int) -> list[str]:
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{broker_port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    config = tmp_path / "nginx.conf"
    config.write_text(
        f"daemon off;\npid nginx.pid;\nerror_log stderr warn;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{site}\n}}\n"
    )
    return [program("nginx") or "nginx", "-p", f"{tmp_path}/", "-c", str(config), "-e", "stderr"]


def nginx_local_command(tmp_path: Path, broker_port: int, port: int) -> list[str]:
    text = (DEPLOY / "nginx-local.conf").read_text()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{broker_port}")
    text = text.replace("127.0.0.1:8081", f"127.0.0.1:{port}")
    config = tmp_path / "nginx-local.conf"
    config.write_text(text)
    return [program("nginx") or "nginx", "-p", f"{tmp_path}/", "-c", str(config), "-e", "stderr"]


def haproxy_command(tmp_path: Path, broker_port: int, port: int) -> list[str]:
    text = (DEPLOY / "haproxy.cfg").read_text()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{broker_port}")
    text = re.sub(r"(?m)^(\s*)bind :80$", rf"\g<1>bind 127.0.0.1:{port}", text)
    # Run as any user, HAProxy cannot raise its file limit to match maxconn.
    text = re.sub(r"maxconn \d+", "maxconn 1000", text)
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    return [program("haproxy") or "haproxy", "-db", "-f", str(config)]


def caddy_command(tmp_path: Path, broker_port: int, port: int) -> list[str]:
    text = (DEPLOY / "Caddyfile").read_text()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{broker_port}")
    text = text.replace("broker.example.com {", f"http://127.0.0.1:{port} {{")
    text = text.replace("grace_period 10s", "grace_period 1s")
    # No admin endpoint (its fixed port would clash between tests) and no certificates.
    assert text.count("\n{\n") == 1, "the Caddyfile has one global options block"
    text = text.replace("\n{\n", "\n{\n\tadmin off\n\tauto_https off\n", 1)
    config = tmp_path / "Caddyfile"
    config.write_text(text)
    return [program("caddy") or "caddy", "run", "--config", str(config), "--adapter", "caddyfile"]


PROXIES = {
    "nginx": ("nginx", nginx_command),
    "nginx-local": ("nginx", nginx_local_command),
    "haproxy": ("haproxy", haproxy_command),
    "caddy": ("caddy", caddy_command),
}


@asynccontextmanager
async def open_proxy(kind: str, tmp_path: Path, broker_port: int) -> AsyncIterator[str]:
    """Run the proxy in front of the broker; yield its URL once it answers."""
    name, command = PROXIES[kind]
    if program(name) is None:
        pytest.skip(f"{name} is not installed (.ci/run installs Debian's {name})")
    port = free_port()
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path),
           "PATH": "/usr/sbin:/usr/bin:/bin"}  # fmt: skip
    log = (tmp_path / "proxy.log").open("wb")
    proc = subprocess.Popen(
        command(tmp_path, broker_port, port), stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with trio.fail_after(10):
            async with httpx.AsyncClient() as client:
                while True:
                    if proc.poll() is not None:
                        raise AssertionError((tmp_path / "proxy.log").read_text())
                    try:
                        if (await client.get(url + "/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.05)  # polling for a foreign process's readiness
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"{name} did not stop within 10 s of SIGTERM") from None
        finally:
            log.close()


class Lines:
    """An SSE response read line by line through httpx (which undoes any chunking)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.heartbeats = 0

    async def event(self) -> dict[str, str]:
        """The next event's fields; counts the heartbeat comments on the way."""
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == ":":
                self.heartbeats += 1
            elif line.startswith(":"):
                continue
            elif line == "":
                if "data" in fields:
                    return fields
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    async def user_event(self) -> dict[str, str]:
        while True:
            fields = await self.event()
            if not fields.get("event", "").startswith("broker."):
                return fields

    async def wait_heartbeats(self, count: int) -> None:
        """Read until ``count`` more heartbeats came (no event may arrive meanwhile)."""
        target = self.heartbeats + count
        async for line in self._lines:
            if line == ":":
                self.heartbeats += 1
                if self.heartbeats >= target:
                    return
            elif line.startswith(("data", "event", "id")):
                raise AssertionError(f"an unexpected event line: {line}")
        raise EOFError("the stream ended")


@pytest.mark.parametrize("kind", sorted(PROXIES))
async def test_streams_pass_the_documented_proxy(kind: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            open_broker_server(stream={"heartbeat_seconds": HEARTBEAT_SECONDS}) as server,
            open_proxy(kind, tmp_path, server.port) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream("GET", "/topics/deploy/events") as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in response.headers
            stream = Lines(response)
            assert (await stream.event())["event"] == "broker.start"
            ids = []
            for n in range(3):  # each small event alone: no buffer of any proxy fills
                answer = await client.post("/topics/deploy", data={"data": f"event {n}"})
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["id"])
                with trio.fail_after(1):
                    fields = await stream.user_event()
                assert (fields["id"], fields["data"]) == (ids[-1], f"event {n}")

            # Idle: heartbeats come through, and the stream is still alive after them.
            await stream.wait_heartbeats(3)
            answer = await client.post("/topics/deploy", content=b"after the silence")
            ids.append(answer.json()["id"])
            with trio.fail_after(1):
                assert (await stream.user_event())["data"] == "after the silence"

            # Last-Event-ID reaches the broker: exactly the events after it, resumed.
            async with client.stream(
                "GET", "/topics/deploy/events", headers={"Last-Event-ID": ids[0]}
            ) as again:
                resumed = Lines(again)
                start = await resumed.event()
                assert start["event"] == "broker.start"
                assert json.loads(start["data"])["resumed"] is True
                got = [(await resumed.user_event())["id"] for _ in ids[1:]]
                assert got == ids[1:]

            # The WebSocket fallback upgrades through the proxy.
            ws_url = url.replace("http://", "ws://") + "/topics/deploy/ws"
            async with open_websocket_url(ws_url) as ws:
                start = json.loads(await ws.get_message())
                assert start["event"] == "broker.start"
                answer = await client.post("/topics/deploy", content=b"over websocket")
                message = json.loads(await ws.get_message())
                assert (message["id"], message["data"]) == (answer.json()["id"], "over websocket")
        assert server.hub.statistics().subscriptions == 0


# -- idle timeouts, read from the files -------------------------------------------------------

_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d|)", text).groups()
    return int(number) * _UNITS[unit]


def test_idle_timeouts_are_longer_than_the_heartbeat() -> None:
    """A proxy that closes a stream silent for less than the heartbeat would cut every quiet
    stream; the files keep their timeouts far above the default heartbeat."""
    found = {}
    for name in ("nginx.conf", "nginx-local.conf"):
        for key, value in re.findall(
            r"(proxy_read_timeout|proxy_send_timeout)\s+(\w+);", (DEPLOY / name).read_text()
        ):
            found[f"{name} {key}"] = seconds(value)
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    for key, value in re.findall(r"timeout (client|server|tunnel)\s+(\w+)", haproxy):
        found[f"haproxy {key}"] = seconds(value)
    assert len(found) == 7, found
    too_short = {k: v for k, v in found.items() if v < 4 * DEFAULT_HEARTBEAT_SECONDS}
    assert too_short == {}
    caddy = (DEPLOY / "Caddyfile").read_text()
    assert not re.search(r"(?m)^\s*(read_timeout|write_timeout|stream_timeout)\b", caddy)


def test_systemd_unit_verifies_with_graceful_stop_and_fd_limit(tmp_path: Path) -> None:
    text = (DEPLOY / "broker.service").read_text()
    settings = dict(re.findall(r"(?m)^(\w+)=(.*)$", text))
    assert settings["KillSignal"] == "SIGTERM"  # the broker's graceful shutdown signal
    assert seconds(settings["TimeoutStopSec"]) > 10  # the --workers supervisor waits 10 s
    assert int(settings["LimitNOFILE"]) >= 65536
    verify = program("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed")
    # The unit as documented, with ExecStart pointing at this checkout's broker.
    broker = Path(sys.prefix) / "bin" / "broker"  # the virtualenv running the tests
    if not broker.exists():
        pytest.skip("no broker command installed to point ExecStart at")
    unit = tmp_path / "broker.service"
    unit.write_text(
        text.replace("/opt/broker/.venv/bin/broker", str(broker)).replace(
            "WorkingDirectory=/opt/broker", f"WorkingDirectory={tmp_path}"
        )
    )
    result = subprocess.run(
        [verify, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys and values only warn

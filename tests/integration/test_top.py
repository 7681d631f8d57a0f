"""``broker top`` against a real broker: one frame for scripts, and disconnecting."""

from __future__ import annotations

import json
import os
import sys
import time

import httpx
import jwt
import trio

from broker.cli import main
from tests.integration.test_slow_clients import open_unread_socket
from tests.support.servers import ROOT, open_broker_server


async def top_process(*args: str) -> tuple[int, str, str]:
    """``python -m broker top ...`` as a real process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("BROKER_ADMIN_TOKEN", None)
    done = await trio.run_process(
        [sys.executable, "-m", "broker", "top", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def top(capsys, *args: str) -> tuple[int, str, str]:
    """``broker top ...`` in a thread of this process (no interpreter start per call)."""
    capsys.readouterr()
    code = await trio.to_thread.run_sync(main, ["top", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def wait_for(predicate, timeout=10):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_once_shows_the_stalled_client_first_and_disconnect_removes_it(capsys):
    with trio.fail_after(30):
        async with open_broker_server(stream={"queue_events": 16}) as server:
            stalled = await open_unread_socket(server.url, "/topics/big/events")
            port = stalled.socket.getsockname()[1]
            calm = await open_unread_socket(server.url, "/topics/calm/events")
            await wait_for(lambda: server.hub.statistics().subscribers == 2)
            async with httpx.AsyncClient(base_url=server.url) as client:
                for n in range(40):
                    await client.post("/topics/big", json={"n": n, "pad": "x" * 32_000})

            code, out, err = await top_process("--url", server.url, "--once")
            assert code == 0, err
            lines = out.splitlines()
            header = next(i for i, line in enumerate(lines) if line.startswith("ID "))
            first = lines[header + 1].split()
            assert f"127.0.0.1:{port}" in first
            assert first[-1] == "big"
            stalled_id = first[0]
            assert "\x1b" not in out  # plain text for scripts
            assert "HOT TOPICS" in out
            assert any(line.startswith("big ") for line in lines)

            code, out, _ = await top(
                capsys, "--url", server.url, "--once", "--json", "--sort", "queue"
            )
            assert code == 0
            snapshot = json.loads(out)
            assert snapshot["connections"]["connections"][0]["id"] == int(stalled_id)

            code, out, err = await top(capsys, "--url", server.url, "--disconnect", stalled_id)
            assert code == 0, err
            assert out.startswith(f"disconnected {stalled_id}")
            await wait_for(lambda: server.hub.statistics().subscribers == 1, 5)

            code, _, err = await top(capsys, "--url", server.url, "--disconnect", stalled_id)
            assert code == 1
            assert "404" in err
            await stalled.aclose()
            await calm.aclose()


async def test_errors_are_one_line_and_a_token_is_sent(capsys, monkeypatch):
    monkeypatch.delenv("BROKER_ADMIN_TOKEN", raising=False)
    secret = "a-shared-secret-that-is-long-enough-32"
    with trio.fail_after(30):
        async with open_broker_server(auth={"secret": secret}) as server:
            code, out, err = await top(capsys, "--url", server.url, "--once")
            assert code == 1
            assert out == ""
            assert err.startswith("broker top: GET /admin/api/summary: 401")
            assert "--token" in err
            admin = jwt.encode({"admin": True, "exp": time.time() + 60}, secret, algorithm="HS256")
            code, out, err = await top(capsys, "--url", server.url, "--once", "--token", admin)
            assert code == 0, err
            assert "(no subscribers)" in out
        code, _, err = await top(capsys, "--url", server.url, "--once")
        assert code == 1
        assert err.startswith("broker top: cannot reach")
        code, _, err = await top(capsys, "--url", server.url, "--limit", "0")
        assert code == 2


def _interact(url: str) -> tuple[int, str]:
    """Run ``broker top`` on a pseudo-terminal: read a frame, press s, then d + Enter, q."""
    import pty
    import select
    import subprocess

    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "top", "--url", url, "--interval", "0.2"],
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        env=env,
        close_fds=True,
    )
    os.close(child_fd)
    screen = b""

    def read_until(marker: bytes, timeout: float = 10) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while marker not in screen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} in {screen[-2000:]!r}"
            if select.select([main_fd], [], [], left)[0]:
                screen += os.read(main_fd, 65536)

    try:
        read_until(b"sort (lag)")
        os.write(main_fd, b"s")
        read_until(b"CONNECTIONS by queue")
        os.write(main_fd, b"d")
        read_until(b"disconnect connection id [")
        os.write(main_fd, b"\n")  # Enter: the top row
        read_until(b"disconnected ")
        os.write(main_fd, b"q")
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)
    return code, screen.decode(errors="replace")


async def test_interactive_keys_sort_and_disconnect_on_a_terminal():
    with trio.fail_after(30):
        async with open_broker_server(stream={"queue_events": 16}) as server:
            stalled = await open_unread_socket(server.url, "/topics/big/events")
            await wait_for(lambda: server.hub.statistics().subscribers == 1)
            async with httpx.AsyncClient(base_url=server.url) as client:
                for n in range(40):
                    await client.post("/topics/big", json={"n": n, "pad": "x" * 32_000})
            code, screen = await trio.to_thread.run_sync(_interact, server.url)
            assert code == 0
            assert "\x1b[?25h" in screen  # the cursor is given back
            assert "127.0.0.1:" in screen
            await wait_for(lambda: server.hub.statistics().subscribers == 0, 5)
            await stalled.aclose()

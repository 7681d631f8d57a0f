"""Disk full: publishes get 503, streams stay, /readyz says why, and it all comes back."""

from __future__ import annotations

import subprocess

import httpx
import pytest
import trio

from tests.durable.support import durable_broker, publish
from tests.support.sse_client import open_sse


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (CI runs as root); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_full_gives_503_keeps_streams_and_recovers(small_disk):
    filler = small_disk / "filler"
    broker = durable_broker(str(small_disk / "data"))
    with trio.fail_after(40):
        try:
            url = await broker.astart()
            filler.write_bytes(b"\0" * (1536 * 1024))  # leaves ~0.5 MiB for the store
            stream = await open_sse(url, "/topics/big/events")
            async with httpx.AsyncClient() as client:
                acked = []
                for n in range(200):
                    answer = await publish(client, url, "big", f"{n:04d}" + "x" * 50_000)
                    if answer.status_code != 202:
                        break
                    acked.append(answer.json()["id"])
                assert answer.status_code == 503, answer.text
                assert answer.json()["code"] == "store_unavailable"
                assert "Retry-After" in answer.headers
                ready = await client.get(url + "/readyz")
                assert ready.status_code == 503
                assert "cannot write" in ready.json()["reason"]
                # The open stream got every acknowledged event and nothing else, and stays.
                got = await stream.events(len(acked))
                assert [e.id for e in got] == acked
                filler.unlink()  # space comes back
                again = await publish(client, url, "big", "after")
                assert again.status_code == 202, again.text
                assert (await client.get(url + "/readyz")).status_code == 200
                [after] = await stream.events(1)
                assert after.data == "after"
            await stream.aclose()
        finally:
            broker.kill()

"""HTTP/2: h2c with prior knowledge and TLS with ALPN, with a real h2 client (httpx + h2)."""

import ssl

import httpx
import trio

from tests.support.certificates import Certificates
from tests.support.servers import open_broker_server


async def subscribe_and_publish(client: httpx.AsyncClient, base: str) -> None:
    """Open an SSE stream and publish on the same HTTP/2 connection; see the event."""
    async with client.stream("GET", f"{base}/topics/h2/events?envelope=1") as stream:
        assert stream.status_code == 200
        assert stream.http_version == "HTTP/2"
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        async for line in lines:
            if line.startswith("event: broker.start"):
                break
        answer = await client.post(f"{base}/topics/h2?event=greeting", json={"hi": "안녕"})
        assert answer.status_code == 202
        assert answer.http_version == "HTTP/2"
        async for line in lines:
            if line.startswith("data:") and "greeting" in line:
                assert '"data":{"hi":"안녕"}' in line
                break


async def test_h2c_prior_knowledge():
    with trio.fail_after(15):
        async with open_broker_server() as server:
            async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
                await subscribe_and_publish(client, server.url)
                stats = (await client.get(f"{server.url}/stats")).json()
                assert stats["handed_off_connections"] == 1  # one connection carried it all


async def test_tls_with_alpn_h2_and_http11(tmp_path):
    certificates = Certificates.create(tmp_path)
    tls = {"cert_file": certificates.server_cert, "key_file": certificates.server_key}
    with trio.fail_after(15):
        async with open_broker_server(tls=tls) as server:
            base = f"https://localhost:{server.port}"
            verify = ssl.create_default_context(cafile=certificates.ca)
            async with httpx.AsyncClient(http2=True, verify=verify, timeout=10) as client:
                await subscribe_and_publish(client, base)
            async with httpx.AsyncClient(verify=verify, timeout=10) as client:
                plain = await client.get(f"{base}/healthz")
                assert plain.http_version == "HTTP/1.1"
                assert plain.json() == {"status": "ok"}
            # plain HTTP on the same port still works
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{server.url}/healthz")).status_code == 200

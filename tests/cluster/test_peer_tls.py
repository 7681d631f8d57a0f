"""Peer links over mutual TLS with a cluster CA, over real sockets (issue 17)."""

import ssl

import httpx
import pytest
import trio

from broker.cluster import frames
from broker.cluster.link import Hello, LinkBroken, handshake
from broker.config import load_settings
from broker.core.errors import ConfigError
from tests.support.cluster_certificates import ClusterCa
from tests.support.peers import peer_endpoint
from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse


async def dial_as_stranger(stream: trio.abc.Stream, node: str) -> None:
    """Run the dialer's handshake with the right secret over ``stream`` (a test's attempt)."""
    await handshake(
        stream,
        frames.FrameDecoder(),
        Hello(node, node * 6, ""),
        b"test-secret",
        dialer=True,
        timeout=5,
    )


@pytest.fixture
def ca(tmp_path):
    return ClusterCa(tmp_path, "cluster")


@pytest.fixture
def other_ca(tmp_path):
    return ClusterCa(tmp_path, "other")


def client_context(ca_file, cert=None):
    context = ssl.create_default_context(cafile=ca_file)
    if cert is not None:
        context.load_cert_chain(cert.tls_cert, cert.tls_key)
    return context


async def wait_rejected(server, count):
    while server.cluster.statistics().rejected_links < count:
        await trio.sleep(0.01)


async def test_two_nodes_link_over_tls_and_replicate(ca):
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=ca.node("a").settings())
            b = await start_node(nursery, "b", [a.cluster.addr], cluster=ca.node("b").settings())
            await wait_linked([a, b])
            assert isinstance(a.cluster.links["b"].stream, trio.SSLStream)
            assert isinstance(b.cluster.links["a"].stream, trio.SSLStream)
            reader = await open_sse(b.url, "/topics/t/events")
            async with httpx.AsyncClient(base_url=a.url) as client:
                assert (await client.post("/topics/t", json="over tls")).status_code == 202
            assert (await reader.events(1))[0].json() == "over tls"
            await reader.aclose()
            nursery.cancel_scope.cancel()


async def test_a_peer_without_a_client_certificate_is_refused(ca, caplog):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=ca.node("a").settings())
            tcp = await trio.open_tcp_stream(*peer_endpoint(a))
            # It trusts the CA and knows the secret, but shows no certificate.
            stream = trio.SSLStream(tcp, client_context(ca.ca_file), server_hostname="127.0.0.1")
            with pytest.raises(LinkBroken):
                await dial_as_stranger(stream, "x")
            await wait_rejected(a, 1)
            assert a.cluster.links == {}
            assert "TLS handshake failed" in caplog.text
            nursery.cancel_scope.cancel()


async def test_a_certificate_from_another_ca_is_refused(ca, other_ca, caplog):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=ca.node("a").settings())
            tcp = await trio.open_tcp_stream(*peer_endpoint(a))
            stranger = other_ca.node("x")
            stream = trio.SSLStream(
                tcp, client_context(ca.ca_file, stranger), server_hostname="127.0.0.1"
            )
            with pytest.raises(LinkBroken):
                await dial_as_stranger(stream, "x")
            await wait_rejected(a, 1)
            # and plain TCP to a TLS peer port gets nowhere either
            plain = await trio.open_tcp_stream(*peer_endpoint(a))
            with pytest.raises(LinkBroken):
                await dial_as_stranger(plain, "y")
            await wait_rejected(a, 2)
            assert a.cluster.links == {}
            assert "certificate verify failed" in caplog.text
            nursery.cancel_scope.cancel()


async def test_nodes_of_different_cas_never_link(ca, other_ca, caplog):
    """The dialer verifies the listener too: b trusts only its own CA."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=ca.node("a").settings())
            b = await start_node(
                nursery, "b", [a.cluster.addr], cluster=other_ca.node("b").settings()
            )
            await wait_rejected(b, 1)  # b dialed a and refused a's certificate
            await wait_rejected(a, 1)
            assert a.cluster.links == {}
            assert b.cluster.links == {}
            assert "node b: link to" in caplog.text
            assert "certificate verify failed" in caplog.text
            nursery.cancel_scope.cancel()


async def test_the_dialer_checks_the_listeners_name(ca, caplog):
    """A certificate from the right CA for another host is refused by the dialer."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start_node(
                nursery, "a", [], cluster=ca.node("a", hosts=("10.9.9.9",)).settings()
            )
            b = await start_node(nursery, "b", [a.cluster.addr], cluster=ca.node("b").settings())
            await wait_rejected(b, 1)
            assert b.cluster.links == {}
            assert "IP address mismatch" in caplog.text or "doesn't match" in caplog.text
            nursery.cancel_scope.cancel()


def cluster_env(**files):
    return {
        "BROKER_CLUSTER_ENABLED": "true",
        "BROKER_CLUSTER_SECRET": "s",
        **{f"BROKER_CLUSTER_{k.upper()}": v for k, v in files.items()},
    }


def test_tls_settings_go_together_and_name_the_key(ca, tmp_path):
    node = ca.node("a")
    settings = load_settings(environ=cluster_env(**node.settings()))
    assert settings.cluster.tls_ca == node.tls_ca
    with pytest.raises(ConfigError, match=r"\[cluster\] tls_ca is missing"):
        load_settings(environ=cluster_env(tls_cert=node.tls_cert, tls_key=node.tls_key))
    with pytest.raises(ConfigError, match=r"\[cluster\] tls_key '/nope' not found"):
        load_settings(environ=cluster_env(**{**node.settings(), "tls_key": "/nope"}))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"\[cluster\] tls_ca"):
        load_settings(environ=cluster_env(**{**node.settings(), "tls_ca": str(junk)}))
    with pytest.raises(ConfigError, match=r"\[cluster\] tls_cert/tls_key"):
        load_settings(environ=cluster_env(**{**node.settings(), "tls_key": node.tls_cert}))

"""``broker token``: a token minted by the real command works against a real broker."""

import os
import subprocess
import sys

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.servers import ROOT, open_broker_server
from tests.support.sse_client import open_sse

SECRET = "a-shared-secret-that-is-long-enough-32"


async def broker_token(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m broker token ARGS`` in a directory with no config.toml."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    return await trio.run_process(
        [sys.executable, "-m", "broker", "token", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=environ,
        cwd=str(ROOT / "tests"),
    )


async def test_a_minted_token_publishes_where_its_patterns_allow(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[auth]\nsecret = "{SECRET}"\nanonymous_subscribe = []\n')
    with trio.fail_after(20):
        minted = await broker_token(
            "--config", str(config), "--sub", "worker-1",
            "--publish", "jobs/*", "alerts", "--subscribe", "jobs/**", "--ttl", "30m",
        )  # fmt: skip
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.decode().strip()
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        assert claims["sub"] == "worker-1"
        assert claims["publish"] == ["jobs/*", "alerts"]
        assert claims["exp"] - claims["iat"] == 1800
        async with (
            open_broker_server(auth={"secret": SECRET, "anonymous_subscribe": ()}) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            bearer = {"Authorization": f"Bearer {token}"}
            assert (
                await client.post("/topics/jobs/1", content=b"a", headers=bearer)
            ).status_code == 202
            assert (
                await client.post("/topics/alerts", content=b"b", headers=bearer)
            ).status_code == 202
            denied = await client.post("/topics/jobs/1/deeper", content=b"c", headers=bearer)
            assert denied.status_code == 403
            assert denied.json()["code"] == "forbidden"
            assert (
                await client.post("/topics/other", content=b"d", headers=bearer)
            ).status_code == 403
            assert (await client.post("/topics/jobs/1", content=b"e")).status_code == 401
            # The same token as the cookie an EventSource sends subscribes and receives.
            stream = await open_sse(
                server.url, "/topics/jobs/2/events", {"Cookie": f"broker_token={token}"}
            )
            try:
                assert stream.status == 200
                assert (await stream.next_event()).event == "broker.start"
                sent = await client.post("/topics/jobs/2", content=b"live", headers=bearer)
                assert sent.status_code == 202
                assert (await stream.next_event()).data == "live"
            finally:
                await stream.aclose()
            refused = await open_sse(
                server.url, "/topics/other/events", {"Cookie": f"broker_token={token}"}
            )
            assert refused.status == 403
            await refused.aclose()


async def test_public_key_tokens_are_signed_with_the_private_key(tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_file = tmp_path / "public.pem"
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = tmp_path / "config.toml"
    config.write_text(f'[auth]\nalgorithm = "ES256"\npublic_key_file = "{public_file}"\n')
    with trio.fail_after(20):
        without_key = await broker_token("--config", str(config), "--publish", "**")
        assert without_key.returncode == 2
        assert b"--key" in without_key.stderr
        minted = await broker_token(
            "--config", str(config), "--publish", "**", "--key", str(key_file)
        )
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.decode().strip()
        async with (
            open_broker_server(
                auth={"algorithm": "ES256", "public_key_file": str(public_file)}
            ) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            answer = await client.post(
                "/topics/x", content=b"a", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 202


def test_without_a_key_it_says_how_to_set_one(capsys, monkeypatch):
    """The command's own function, in-process: exit codes and what it prints."""
    from broker.cli import main

    monkeypatch.chdir(ROOT / "tests")  # no config.toml here
    monkeypatch.delenv("BROKER_AUTH_SECRET", raising=False)
    assert main(["token", "--publish", "**"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "BROKER_AUTH_SECRET" in err
    monkeypatch.setenv("BROKER_AUTH_SECRET", SECRET)
    with pytest.raises(SystemExit) as bad_ttl:
        main(["token", "--ttl", "soon"])
    assert bad_ttl.value.code == 2
    assert "not a duration" in capsys.readouterr().err
    assert main(["token", "--subscribe", "a"]) == 0
    out, err = capsys.readouterr()
    claims = jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["subscribe"] == ["a"]
    assert main(["token"]) == 0
    assert "allows nothing" in capsys.readouterr().err


async def test_the_python_client_sends_its_token_on_every_transport():
    from broker_client import BrokerClient, ClientError, Event

    minted = await broker_token(
        "--publish", "jobs/**", "--subscribe", "jobs/**", env={"BROKER_AUTH_SECRET": SECRET}
    )
    token = minted.stdout.decode().strip()
    with trio.fail_after(20):
        async with open_broker_server(auth={"secret": SECRET, "anonymous_subscribe": ()}) as server:
            async with BrokerClient(server.url) as anonymous:
                with pytest.raises(ClientError) as refused:
                    await anonymous.publish("jobs/1", "x")
                assert refused.value.status == 401
            async with BrokerClient(server.url, token=token) as client:
                for transport in ("sse", "ws"):
                    async with client.subscribe("jobs/1", transport=transport) as events:
                        sent = await client.publish("jobs/1", f"over {transport}")
                        async for item in events:
                            if isinstance(item, Event):
                                assert (item.id, item.data) == (sent, f"over {transport}")
                                break

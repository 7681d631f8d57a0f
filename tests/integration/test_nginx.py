"""The broker behind Debian's nginx with docs/nginx.conf: events arrive unbuffered."""

import re
import shutil
import socket
import subprocess

import httpx
import pytest
import trio

from tests.support.servers import ROOT, open_broker_server
from tests.support.sse_client import open_sse

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(
    not shutil.which(NGINX), reason="nginx is not installed (CI installs Debian's nginx)"
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render_config(tmp_path, broker_port, listen_port):
    site = (ROOT / "docs" / "nginx.conf").read_text()
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{broker_port};")
    site = re.sub(r"listen 80;", f"listen 127.0.0.1:{listen_port};", site)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    config = f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/client_body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    {site}
}}
"""
    path = tmp_path / "nginx.conf"
    path.write_text(config)
    return path


async def test_events_pass_through_nginx_without_buffering(tmp_path):
    with trio.fail_after(30):
        async with open_broker_server() as server:
            port = free_port()
            config = render_config(tmp_path, server.port, port)
            proc = subprocess.Popen(
                [NGINX, "-p", str(tmp_path), "-c", str(config), "-g", "daemon off;"],
                stderr=subprocess.PIPE,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                with trio.fail_after(10):
                    while True:
                        try:
                            async with httpx.AsyncClient() as client:
                                if (await client.get(url + "/healthz")).status_code == 200:
                                    break
                        except httpx.HTTPError:
                            await trio.sleep(0.05)
                stream = await open_sse(url, "/topics/n/events")
                assert stream.status == 200
                assert (await stream.next_event()).event == "broker.start"
                async with httpx.AsyncClient(base_url=url) as client:
                    for n in range(3):
                        await client.post("/topics/n", json=n)
                        # each small event must arrive on its own, long before any buffer
                        # of nginx's would fill: one second is generous
                        with trio.fail_after(1):
                            [event] = await stream.events(1)
                        assert event.json() == n
                await stream.aclose()
            finally:
                proc.terminate()
                proc.wait(10)

"""Self-test of the C load generators against small fake servers (no broker needed).

    .venv/bin/python -m load.selftest [--bin-dir DIR]

Covers what real servers do to a client: chunked and identity bodies, frames split at every
possible point across reads, CRLF / CR / LF line endings, lines longer than the read buffer,
`broker.*` notices, a server that closes streams, refuses connections, answers 404 or hangs up;
and for the publisher: Content-Length, chunked and close-delimited answers, `Connection: close`,
error statuses and a server that goes away.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .tools import BUILD_DIR, build_tools, free_port

HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"


def _now_ns() -> int:
    return time.monotonic_ns()


def _event(seq: int, eol: bytes = b"\n", multiline: bool = False) -> bytes:
    data = json.dumps({"t": _now_ns(), "seq": seq}, separators=(",", ":")).encode()
    lines = [b"id: e" + str(seq).encode()]
    if multiline:
        lines += [b"data: " + data, b"data: second line"]
    else:
        lines.append(b"data: " + data)
    return eol.join(lines) + eol + eol


def _chunk(b: bytes) -> bytes:
    return f"{len(b):x}\r\n".encode() + b + b"\r\n"


def _send_split(conn: socket.socket, payload: bytes, step: int) -> None:
    """Sends in pieces of `step` bytes with tiny pauses so reads see partial frames."""
    for i in range(0, len(payload), step):
        conn.sendall(payload[i : i + step])
        time.sleep(0.0005)


def sse_handler(conn: socket.socket, path: str) -> None:
    if path.startswith("/chunked"):
        body = (
            b": hello\r\n\r\n"
            + b'event: broker.start\r\nid: p0\r\nretry: 3000\r\ndata: {"position":"p0"}\r\n\r\n'
            + b"".join(_event(i, b"\r\n", multiline=(i == 3)) for i in range(10))
            + b'id: d1\r\nevent: broker.dropped\r\ndata: {"dropped":5,"resume_from":"x"}\r\n\r\n'
            + b'event: custom\r\ndata: {"t": '
            + str(_now_ns()).encode()
            + b', "seq": 99}\r\n\r\n'
        )
        raw = HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n"
        # chunks that cut lines, CRLFs and the chunk framing itself at odd places
        pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
        raw += b"".join(_chunk(p) for p in pieces) + b"0\r\n\r\n"
        _send_split(conn, raw, 5)
        time.sleep(0.05)
    elif path.startswith("/cr"):
        body = b"".join(_event(i, b"\r") for i in range(10))
        _send_split(conn, HEAD_OK + b"\r\n" + body, 3)
        time.sleep(0.05)
    elif path.startswith("/long"):
        big = b'data: {"t":' + str(_now_ns()).encode() + b',"pad":"' + b"x" * 10000 + b'"}\n\n'
        body = big + b"".join(_event(i) for i in range(9))
        _send_split(conn, HEAD_OK + b"\r\n" + body, 1500)
        time.sleep(0.05)
    elif path.startswith("/close"):
        conn.sendall(HEAD_OK + b"\r\n" + _event(1) + _event(2))
        time.sleep(0.05)
    elif path.startswith("/404"):
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.05)
    elif path.startswith("/hangup"):
        pass


def pub_handler(conn: socket.socket, path: str, req_no: int) -> bool:
    """Answers one publish; returns False when the connection is to be closed."""
    body = b'{"id":"x"}'
    if path.startswith("/reject"):
        conn.sendall(
            b'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 17\r\n\r\n{"error":"busy"}\n'
        )
        return True
    if req_no % 5 == 1:
        conn.sendall(
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
            + _chunk(body[:4])
            + _chunk(body[4:])
            + b"0\r\n\r\n"
        )
        return True
    if req_no % 7 == 2:
        conn.sendall(
            b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 10\r\n\r\n" + body
        )
        return False
    if req_no % 11 == 3:
        conn.sendall(
            b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\n" + body
        )  # close-delimited
        return False
    head = b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\n"
    _send_split(conn, head + body, 9) if req_no % 3 == 0 else conn.sendall(head + body)
    return True


def _read_request(f: Any) -> tuple[str, bytes] | None:
    line = f.readline()
    if not line:
        return None
    path = line.split()[1].decode()
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        if h.lower().startswith(b"content-length:"):
            length = int(h.split(b":")[1])
    return path, f.read(length) if length else b""


class FakeServer:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            while True:
                req = _read_request(f)
                if req is None:
                    return
                path, _ = req
                if path.startswith("/pub") or path.startswith("/reject"):
                    with self.lock:
                        self.requests += 1
                        n = self.requests
                    if not pub_handler(conn, path, n):
                        return
                else:
                    sse_handler(conn, path)
                    return
        except OSError:
            pass
        finally:
            f.close()
            conn.close()


def _run(argv: list[Any], timeout: float = 30) -> dict[str, Any]:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{argv[0]} exited {r.returncode}: {r.stderr}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    # --bin-dir DIR: test other builds of the tools (e.g. with -fsanitize=address,undefined)
    if len(sys.argv) == 3 and sys.argv[1] == "--bin-dir":
        bin_dir = Path(sys.argv[2])
    else:
        build_tools()
        bin_dir = BUILD_DIR
    sse, pub = bin_dir / "ssesub", bin_dir / "pubload"
    srv = FakeServer()
    failures = 0

    def check(name: str, cond: bool, info: Any) -> None:
        nonlocal failures
        print(f"{'ok  ' if cond else 'FAIL'} {name}" + ("" if cond else f": {info}"))
        failures += not cond

    base = [sse, "--port", srv.port, "--duration", 5, "--bufsize", 4096]
    r = _run([*base, "--path", "/chunked", "-n", 20])
    check(
        "chunked + CRLF + split frames: 11 data events per stream",
        r["events"] == 220 and r["events_min"] == 11 and r["events_max"] == 11,
        r,
    )
    check(
        "chunked: broker.dropped counted, broker.start ignored",
        r["dropped_notices"] == 20 and r["dropped"] == 100 and r["broker_events"] == 20,
        r,
    )
    check(
        "chunked: end of body closes the stream",
        r["closed_by_server"] == 20 and r["protocol_errors"] == 0,
        r,
    )
    check(
        'chunked: latency from "t" (also with a space after the colon)',
        r["latency_ms"]["count"] == 220 and 0 <= r["latency_ms"]["max"] < 5000,
        r["latency_ms"],
    )

    r = _run([*base, "--path", "/cr", "-n", 10])
    check("CR-only line endings, 3-byte writes", r["events"] == 100 and r["events_min"] == 10, r)

    r = _run([*base, "--path", "/long", "-n", 10])
    check(
        "10 KiB line > 4 KiB buffer: counted via its prefix, rest skipped",
        r["events"] == 100 and r["events_min"] == 10 and r["latency_ms"]["count"] == 100,
        r,
    )

    r = _run([*base, "--path", "/close", "-n", 50])
    check(
        "server closes streams",
        r["ok"] == 50 and r["closed_by_server"] == 50 and r["events"] == 100,
        r,
    )
    check(
        "all closed ends the run early", r["exit_reason"] == "all_closed" and r["elapsed_s"] < 4, r
    )

    r = _run([*base, "--path", "/404", "-n", 10])
    check(
        "non-200 answers are failures",
        r["fail_http"] == 10 and r["last_bad_status"] == 404 and r["exit_reason"] == "all_failed",
        r,
    )

    r = _run([*base, "--path", "/hangup", "-n", 10])
    check("hang-up before the head", r["fail_early_close"] == 10, r)

    dead = free_port()
    r = _run([sse, "--port", dead, "-n", 100, "--duration", 5])
    check("connection refused", r["fail_refused"] == 100 and r["exit_reason"] == "all_failed", r)

    r = _run([*base, "--path", "/close", "-n", 20, "--stall-fraction", 0.5])
    check("stall fraction: half never read", r["stalled"] == 10 and r["ok"] == 10, r)

    r = _run([pub, "--port", srv.port, "--path", "/pub/x", "-k", 4, "-m", 300])
    check(
        "publisher: CL, chunked, close-delimited and Connection: close answers",
        r["accepted"] == 300 and r["errors"] == 0 and r["reconnects"] > 0,
        r,
    )
    r = _run([pub, "--port", srv.port, "--path", "/pub/x", "-k", 2, "-m", 40, "--rate", 200])
    check("publisher: paced at 200/s", r["accepted"] == 40 and 0.15 < r["elapsed_s"] < 0.4, r)
    r = _run(
        [pub, "--port", srv.port, "--path", "/publish", "--batch", 10, "-m", 95, "--size", 300]
    )
    check("publisher: batches (last one short)", r["accepted"] == 95 and r["requests"] == 10, r)
    r = _run([pub, "--port", srv.port, "--path", "/reject", "-m", 20])
    check(
        "publisher: 503 counted as rejected",
        r["accepted"] == 0 and r["rejected"].get("503") == 20,
        r,
    )
    r = _run([pub, "--port", dead, "-m", 20, "--duration", 10])
    check(
        "publisher: refused connections end the run",
        r["accepted"] == 0 and r["connect_failures"] > 0,
        r,
    )
    print("selftest:", "all passed" if not failures else f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

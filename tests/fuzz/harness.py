"""The fuzz suite's harness: one real broker process per module, raw sockets, the properties.

Every case is sent on a new TCP connection to a real ``python -m broker run`` process and
answered (or closed) before the next one; then the properties of the whole suite are
checked:

* the process is still running, and still accepts connections (``/stats`` is read
  after every case, on a kept-alive connection of its own);
* no 5xx for bad input: every answer is 1xx-4xx, except 501 (a transfer coding the broker
  does not implement) and 505 (an HTTP version other than 1.x), which RFC 9112 asks for;
  every 4xx carries a JSON ``{"error","code"}`` body, except answers to ``HEAD`` and
  hypercorn's own bodiless 400 for bytes h11 refuses on a connection hypercorn serves;
* nothing is published from bad input: the broker's ``published`` count grows by exactly
  the events its 2xx answers (or WebSocket ``broker.ack``) acknowledged in that case;
* at the end of each target: ``broker_internal_errors_total`` is 0 everywhere (no fault was
  even contained), a bystander SSE subscriber opened before the first case receives an
  event published after the last, and the process's RSS grew by less than
  :data:`RSS_BOUND_BYTES` since the first cases.

Tests here are synchronous (hypothesis drives them) and every socket operation has a
timeout, the blocking counterpart of ``trio.fail_after``. The number of cases is
``BROKER_FUZZ_EXAMPLES`` per target (default :data:`DEFAULT_EXAMPLES`; ``make fuzz`` sets
it high); each target prints how many cases it ran.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import HealthCheck, settings

from tests.support.servers import BrokerProcess

#: Cases per target in the normal run (the suite stays within ~45 s on a busy 2-core box).
DEFAULT_EXAMPLES: Final = 400
EXAMPLES: Final = int(os.environ.get("BROKER_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))

#: How much the broker's RSS may grow over one target's cases (after a warm-up).
RSS_BOUND_BYTES: Final = 24 * 1024 * 1024

#: 5xx answers the RFC asks for on bad input: 501 (unknown transfer coding), 505 (version).
RFC_5XX: Final = frozenset({501, 505})

#: How long a case waits for an answer before it half-closes its side.
ANSWER_WAIT_SECONDS: Final = 0.15
#: How long a half-closed case waits for the broker to close.
CLOSE_WAIT_SECONDS: Final = 3.0

#: Topics the fuzz may publish to (a small set: memory stays bounded by history).
TOPICS: Final = ("fz/a", "fz/b", "fz-c")
WATCH_TOPIC: Final = "fz/watch"

FUZZ_SETTINGS: Final = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Cases run per target in this session (printed by the conftest's summary hook).
CASES_RUN: dict[str, int] = {}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    #: The answer to a ``HEAD`` request: it has no body.
    head: bool = False

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Exchange:
    """What a case got back: parsed answers, every byte, and whether the broker closed."""

    answers: list[Answer] = field(default_factory=list)
    raw: bytes = b""
    closed: bool = False


def parse_answers(data: bytes, *, head: bool = False) -> tuple[list[Answer], bool]:
    """HTTP/1.1 answers in ``data``; ``True`` when the last one is complete.

    A streaming answer (101, an event stream), or any answer to a ``HEAD`` request
    (``head``), is complete once its head is in.
    """
    answers: list[Answer] = []
    at = 0
    while at < len(data):
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return answers, False
        lines = data[at:end].decode("latin-1").split("\r\n")
        match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if match is None:
            raise AssertionError(f"not an HTTP answer: {data[at : at + 200]!r}")
        status = int(match[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        at = end + 4
        streaming = (
            head
            or status in (101, 204, 304)
            or "text/event-stream" in headers.get("content-type", "")
        )
        if streaming:
            answers.append(Answer(status, headers, data[at:], head))
            return answers, True
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, at = _dechunk(data, at)
            if body is None:
                return answers, False
        else:
            length = int(headers.get("content-length", "0"))
            if len(data) < at + length:
                return answers, False
            body, at = data[at : at + length], at + length
        answers.append(Answer(status, headers, body))
        if 100 <= status < 200:  # 100 Continue: the real answer follows
            continue
    return answers, bool(answers) and answers[-1].status >= 200


def _dechunk(data: bytes, at: int) -> tuple[bytes | None, int]:
    body = b""
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return None, at
        size = int(data[at:end].split(b";")[0], 16)
        at = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", at)
            if trailer_end < 0:
                return None, at
            return body, trailer_end + 2
        if len(data) < at + size + 2:
            return None, at
        body += data[at : at + size]
        at += size + 2


class Target:
    """One fuzz target against one broker process (see module docstring)."""

    def __init__(self, name: str, broker: BrokerProcess, bystander: Bystander) -> None:
        self.name = name
        self.broker = broker
        self.bystander = bystander
        self.cases = 0
        #: What the cases got: ``"202"``, ``"400"``, ``"closed"``, ``"ws close 1002"`` …
        self.outcomes: Counter[str] = Counter()
        self.control = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=10)
        self.published = self.stats()["published"]
        self.rss_start = 0

    def broker_errors(self) -> str:
        """The broker's log from its first internal error on (for assertion messages)."""
        log = self.broker.log
        first = next((i for i, line in enumerate(log) if "internal error" in line), len(log))
        return "".join(log[first : first + 60])

    def begin(self) -> None:
        """Start a case from the broker's current count (a failed case may have left it)."""
        self.published = self.stats()["published"]

    def stats(self) -> dict[str, Any]:
        self.control.request("GET", "/stats")
        answer = self.control.getresponse()
        body = answer.read()
        assert answer.status == 200, body
        return json.loads(body)

    def metrics(self) -> str:
        self.control.request("GET", "/metrics")
        return self.control.getresponse().read().decode()

    def exchange(
        self, data: bytes, *, hold: Callable[[socket.socket], bytes] | None = None
    ) -> Exchange:
        """Send ``data`` on a new connection; read the answer (or until the broker closes).

        ``hold``, if given, runs on the open socket once the answer is in (a WebSocket
        session after its 101) and returns what it read.
        """
        got = Exchange()
        with socket.create_connection(("127.0.0.1", self.broker.port), timeout=5) as sock:
            try:
                sock.sendall(data)
            except OSError:  # the broker refused and closed while we were still sending
                pass
            received = b""
            deadline = time.monotonic() + ANSWER_WAIT_SECONDS
            complete = False
            while not complete:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    got.closed = True
                    break
                received += chunk
                _, complete = parse_answers(received, head=data.startswith(b"HEAD "))
                deadline = time.monotonic() + ANSWER_WAIT_SECONDS
            if complete and hold is not None:
                received += hold(sock)
            elif not complete and not got.closed:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                sock.settimeout(CLOSE_WAIT_SECONDS)
                while True:
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        raise AssertionError(
                            f"broker neither answered nor closed: {data[:300]!r}"
                        ) from None
                    except OSError:
                        chunk = b""
                    if not chunk:
                        got.closed = True
                        break
                    received += chunk
        got.raw = received
        got.answers, _ = parse_answers(received, head=data.startswith(b"HEAD "))
        return got

    def check(self, got: Exchange, acknowledged: int | None = None, case: object = None) -> None:
        """The per-case properties (module docstring). ``acknowledged``: events the case's
        answers acknowledged, counted from its 2xx answers when not given."""
        self.cases += 1
        assert self.broker.proc is not None
        assert self.broker.proc.poll() is None, "the broker process ended"
        for answer in got.answers:
            assert not (answer.status >= 500 and answer.status not in RFC_5XX), (
                answer.status,
                answer.body[:300],
                case,
            )
            if answer.status >= 400 and not answer.head and not _hypercorn_own(answer):
                error = answer.json()
                assert set(error) >= {"error", "code"}, error
        self.outcomes.update(str(a.status) for a in got.answers)
        if not got.answers:
            self.outcomes["closed without answer" if got.closed else "no answer"] += 1
        if acknowledged is None:
            acknowledged = sum(_acknowledged(a) for a in got.answers)
        published = self.stats()["published"]
        grown, self.published = published - self.published, published
        assert grown == acknowledged, f"published {grown}, acknowledged {acknowledged}: {case!r}"
        if self.cases == 20:
            self.rss_start = rss(self.broker)

    def finish(self, token: str | None = None) -> None:
        """The end-of-target properties (module docstring); prints the number of cases."""
        CASES_RUN[self.name] = CASES_RUN.get(self.name, 0) + self.cases
        seen = ", ".join(f"{k}: {v}" for k, v in self.outcomes.most_common())
        grown = rss(self.broker) - self.rss_start if self.rss_start else 0
        print(
            f"\nfuzz target {self.name}: {self.cases} cases ({seen}); "
            f"broker RSS {rss(self.broker) / 2**20:.1f} MiB, {grown / 2**20:+.1f} MiB since case 20"
        )
        assert self.broker.proc is not None
        assert self.broker.proc.poll() is None
        errors = re.findall(r"^broker_internal_errors_total\{[^}]*\} (\S+)$", self.metrics(), re.M)
        assert errors, "no broker_internal_errors_total on /metrics"
        assert all(float(v) == 0 for v in errors), self.broker_errors()
        self.bystander.assert_receives(self, f"after {self.name}", token)
        if self.rss_start:
            assert grown < RSS_BOUND_BYTES, f"RSS grew by {grown / 2**20:.1f} MiB"
        self.control.close()


def _hypercorn_own(answer: Answer) -> bool:
    """hypercorn's own answer to bytes h11 refuses on a connection it serves (a 400 with no
    body): the broker's JSON errors never reach those (docs/security.md says so)."""
    return answer.body == b"" and answer.headers.get("server", "").startswith("hypercorn")


def _acknowledged(answer: Answer) -> int:
    if not 200 <= answer.status < 300 or not answer.body.startswith(b"{"):
        return 0
    payload = answer.json()
    if "ids" in payload:
        return len(payload["ids"])
    return 1 if "id" in payload and "topic" in payload else 0


class Bystander:
    """An SSE subscriber to :data:`WATCH_TOPIC`, open before the first case of a module."""

    def __init__(self, broker: BrokerProcess, headers: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        self.sock.sendall(
            f"GET /topics/{WATCH_TOPIC}/events HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
        )
        self.buffer = b""
        self._read_until(b"broker.start")

    def _read_until(self, marker: bytes) -> None:
        deadline = time.monotonic() + 5
        while marker not in self.buffer:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            assert chunk, "the bystander's stream ended"
            self.buffer += chunk
        self.buffer = self.buffer[self.buffer.index(marker) + len(marker) :]

    def assert_receives(self, target: Target, text: str, token: str | None = None) -> None:
        headers = {"Content-Type": "text/plain"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        target.control.request(
            "POST", f"/topics/{WATCH_TOPIC}", body=text.encode(), headers=headers
        )
        answer = target.control.getresponse()
        assert answer.status == 202, answer.read()
        answer.read()
        self._read_until(f"data: {text}\n".encode())

    def close(self) -> None:
        self.sock.close()


def rss(broker: BrokerProcess) -> int:
    """The broker process's resident set size in bytes."""
    assert broker.proc is not None
    with open(f"/proc/{broker.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")

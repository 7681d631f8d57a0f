"""Run the shell blocks of a Markdown document the way a reader would, and check their output.

The convention (also stated in README.md, "Development"):

- ```` ```sh ```` blocks are run, in document order, by one bash session, so ``export`` and
  ``cd`` carry from block to block as they would in the reader's terminal. A block must not
  fail: any command that exits non-zero fails the test (``trap ERR``).
- ```` ```sh background ```` blocks are started and left running (a broker, a subscriber, a
  proxy) until the document ends. ``port=N`` waits until port N accepts connections before
  the next block runs; without it the test waits for the block's first output line.
- ```` ```text output ```` right after a ``sh`` block is what it prints (stdout and stderr);
  ```` ```text output background ```` is what the latest background block has printed by
  then (a prefix: streams go on). In both, ``...`` stands for any text, and event ids
  (``3k9x0q-1``) match any id.
- ```` ```console ```` (and every other language) is shown, never run: commands that need
  the network, root, or a person (``git clone``, ``make run``, ``sudo``).

Ports: every port in ``ports`` (8080, 8081 ...) is replaced, in the blocks, in the expected
output and in the text files of the copy of the repository the session runs in, by a free
ephemeral port, so the documents keep their familiar addresses and the test still runs
beside any other broker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

FENCE: Final = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
ID: Final = re.compile(r"\b[0-9a-z]{6}-[0-9a-z]+(?:\.[0-9a-z]{6}-[0-9a-z]+)*\b")
BLOCK_TIMEOUT_SECONDS: Final = 30.0
#: Text files of the repository copy in which the documented ports are replaced.
TEXT_SUFFIXES: Final = {".md", ".toml", ".conf", ".cfg", ".py", ".js", ".html", ".service", ""}


@dataclass
class Block:
    """One fenced block: its language, its options (``background``, ``port=N``) and text."""

    language: str
    options: dict[str, str]
    text: str
    line: int

    @property
    def runnable(self) -> bool:
        return self.language == "sh"

    @property
    def is_output(self) -> bool:
        return self.language == "text" and "output" in self.options


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order."""
    found = []
    for match in FENCE.finditer(markdown):
        words = match[1].split()
        language = words[0] if words else ""
        options = {}
        for word in words[1:]:
            name, _, value = word.partition("=")
            options[name] = value
        line = markdown.count("\n", 0, match.start()) + 1
        found.append(Block(language, options, match[2], line))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def substitute(text: str, ports: dict[int, int]) -> str:
    """Replace each documented port (as ``:8080`` or ``port 8080``/``--port 8080``) by its twin."""
    for old, new in ports.items():
        text = re.sub(rf"(?<![0-9]){old}(?![0-9])", str(new), text)
    return text


def copy_repository(source: Path, target: Path, ports: dict[int, int]) -> None:
    """Copy the files git knows (tracked or not ignored), replacing ports in text files."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        origin = source / name
        if not origin.is_file():  # follows links: a linked file is copied as a file
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if origin.suffix in TEXT_SUFFIXES and origin.stat().st_size < 1_000_000:
            try:
                destination.write_text(substitute(origin.read_text(), ports))
                shutil.copymode(origin, destination)
                continue
            except UnicodeDecodeError:
                pass
        shutil.copy2(origin, destination)


def pattern(expected: str) -> re.Pattern[str]:
    """A regex for expected output: ``...`` is any text, ids are any id, line ends are loose."""
    lines = [line.rstrip() for line in ID.sub("\0", expected.strip("\n")).split("\n")]
    parts = []
    for line in lines:
        pieces = [re.escape(piece) for piece in line.split("...")]
        parts.append(".*?".join(piece.replace("\0", ID.pattern) for piece in pieces))
    return re.compile(r"[ \t]*\n".join(parts), re.S)


def normalized(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.replace("\r\n", "\n").split("\n"))


@dataclass
class Session:
    """One bash session running a document's blocks in ``cwd``.

    Owns the bash process group: :meth:`close` ends it and everything it started in the
    background (the broker, curl, nginx ...).
    """

    cwd: Path
    env: dict[str, str]
    ports: dict[int, int]
    work: Path
    proc: subprocess.Popen[str] | None = None
    background: list[Path] = field(default_factory=list)
    count: int = 0

    def __enter__(self) -> Session:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,  # every block's output goes to its own file
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group, ended as one in close()
        )
        self._send(f"set -o pipefail; trap 'echo \"$BASH_COMMAND\" >> {self.work}/errors' ERR")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc = None

    def _send(self, line: str) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _wait_marker(self, marker: str, timeout: float) -> None:
        done = self.work / marker
        deadline = time.monotonic() + timeout
        while not done.exists():
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError("the bash session ended")
            if time.monotonic() > deadline:
                raise AssertionError(f"a block ran longer than {timeout} s")
            time.sleep(0.02)

    def run(self, block: Block) -> str:
        """Run a block; return what it printed (for a background block: what it printed
        before it was ready)."""
        self.count += 1
        script = self.work / f"block{self.count}.sh"
        script.write_text(substitute(block.text, self.ports))
        output = self.work / f"block{self.count}.out"
        marker = f"block{self.count}.done"
        errors = self.work / "errors"
        errors.unlink(missing_ok=True)
        if "background" in block.options:
            self._send(f"( source {script} ) > {output} 2>&1 < /dev/null &")
            self._send(f"touch {self.work / marker}")
            self._wait_marker(marker, 5)
            self.background.append(output)
            port = block.options.get("port")
            if port:
                wait_for_port(self.ports.get(int(port), int(port)), output)
            else:
                wait_for_output(output)
            return output.read_text()
        self._send(f"source {script} > {output} 2>&1 < /dev/null; touch {self.work / marker}")
        self._wait_marker(marker, BLOCK_TIMEOUT_SECONDS)
        text = output.read_text()
        if errors.exists():
            failed = errors.read_text().strip()
            raise AssertionError(f"a command failed: {failed}\n--- output ---\n{text}")
        return text

    def background_output(self) -> str:
        assert self.background, "an output background block before any background block"
        return self.background[-1].read_text()


def wait_for_port(port: int, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nothing listens on port {port} after {timeout} s:\n{log.read_text()}"
                ) from None
            time.sleep(0.05)


def wait_for_output(log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not log.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"a background block printed nothing in {timeout} s")
        time.sleep(0.02)


def check_document(
    session: Session, document: Iterable[Block], timeout: float = 10
) -> Iterator[tuple[Block, str]]:
    """Run every runnable block and check every output block; yield (block, output)."""
    last = ""
    for block in document:
        if block.runnable:
            last = session.run(block)
            yield block, last
        elif block.is_output:
            expected = pattern(substitute(block.text, session.ports))
            if "background" in block.options:
                deadline = time.monotonic() + timeout
                while not expected.match(normalized(session.background_output())):
                    if time.monotonic() > deadline:
                        raise AssertionError(
                            f"line {block.line}: the background block printed\n"
                            f"{session.background_output()}\nexpected\n{block.text}"
                        )
                    time.sleep(0.02)
            else:
                assert expected.fullmatch(normalized(last).strip("\n")), (
                    f"line {block.line}: the block printed\n{last}\nexpected\n{block.text}"
                )


LINK: Final = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<a\s[^>]*href=\"([^\"]+)\"")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _prose(path: Path) -> str:
    """The text of a Markdown file without its fenced blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    return {slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", _prose(path), re.M)}


def link_problems(document: Path, root: Path) -> list[str]:
    """Every relative link of ``document`` that does not name a file (and heading) in
    ``root``, or leaves it."""
    problems = []
    for match in LINK.finditer(_prose(document)):
        target = match[1] or match[2]
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return problems

"""A copy of the repository with free ports in place of the documented ones, and the
environment a reader has after ``make run`` (the virtualenv at ``.venv``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.docs.runner import copy_repository, free_port
from tests.support.servers import ROOT

#: The ports the documents use, replaced by free ones in the copy.
DOCUMENTED_PORTS = (8080, 8081, 8082)


@pytest.fixture
def docs_tree(tmp_path: Path) -> tuple[Path, dict[int, int], dict[str, str]]:
    """(the copy, documented port -> free port, the environment to run its blocks in)."""
    ports = {port: free_port() for port in DOCUMENTED_PORTS}
    tree = tmp_path / "broker"
    copy_repository(ROOT, tree, ports)
    (tree / ".venv").symlink_to(Path(sys.prefix))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "PYTEST_"))}
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = f"{tree}:{tree / 'clients' / 'python'}"
    env["PYTHONUNBUFFERED"] = "1"
    env["BROKER_SHUTDOWN_GRACE_SECONDS"] = "0.5"
    env["HOME"] = str(tmp_path)
    # curl draws a progress meter on stderr when its output is not a terminal; in the
    # reader's terminal there is none, so the session's curl does not draw one either.
    (tmp_path / ".curlrc").write_text("--silent\n--show-error\n")
    return tree, ports, env

"""docs/quickstart.md, run as written: secret, broker, nginx, token, a job, the stream.

Skipped only where nginx is missing (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil

import pytest

from tests.docs.runner import Session, blocks, check_document

pytestmark = pytest.mark.slow


def test_quickstart_runs_as_written(docs_tree, tmp_path):
    if not (shutil.which("nginx") or shutil.which("/usr/sbin/nginx")):
        pytest.skip("nginx is not installed")
    tree, ports, env = docs_tree
    env["PATH"] += ":/usr/sbin"
    document = blocks((tree / "docs" / "quickstart.md").read_text())
    commands = [b for b in document if b.language in ("sh", "console")]
    assert len(commands) <= 10, "the quickstart promises at most ten commands"
    work = tmp_path / "session"
    work.mkdir()
    with Session(tree, env, ports, work) as session:
        ran = list(check_document(session, document, timeout=20))
    assert len(ran) == len([b for b in document if b.runnable]) >= 6

"""README.md as a newcomer reads it: its shell blocks run and print what it says; its links
lead to files in the repository.

The conventions are in ``tests/docs/runner.py`` and in the README's "Development" section.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.docs.runner import Block, Session, blocks, check_document, link_problems
from tests.support.servers import ROOT


def documents() -> list[Path]:
    others = [
        "clients/js/README.md",
        "clients/python/README.md",
        "examples/README.md",
        "load/README.md",
    ]
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *(ROOT / name for name in others),
    ]


@pytest.mark.slow  # two broker processes and some twenty commands: about 10 s
def test_readme_shell_blocks_run_and_print_what_it_says(docs_tree, tmp_path):
    tree, ports, env = docs_tree
    readme = blocks((tree / "README.md").read_text())
    runnable = [b for b in readme if b.runnable]
    assert len(runnable) >= 6, "the README lost its runnable examples"
    work = tmp_path / "session"
    work.mkdir()
    with Session(tree, env, ports, work) as session:
        # What `make run` does for the reader: a broker with the repository's config.toml.
        session.run(
            Block(
                "sh",
                {"background": "", "port": "8080"},
                ".venv/bin/broker run --config config.toml\n",
                0,
            )
        )
        ran = list(check_document(session, readme))
        assert len(ran) == len(runnable)
        # The /stats fields the README names are the ones the broker reports.
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[8080]}/stats", timeout=5) as r:
            stats = json.load(r)
        row = next(line for line in (tree / "README.md").read_text().splitlines()
                   if line.startswith("| `GET /stats`"))  # fmt: skip
        named = re.findall(r"`(\w+)`", row.split("|")[2])
        assert set(named) - {"cluster"} <= set(stats), set(named) - set(stats)
        assert set(stats) <= set(named), (
            f"/stats fields the README does not name: {set(stats) - set(named)}"
        )


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(document: Path) -> None:
    assert link_problems(document, ROOT) == []

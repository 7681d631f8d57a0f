"""``broker run`` runs under the C allocator unless ``PYTHONMALLOC`` names another: memory
that expired topics freed goes back to the system (docs/durability.md#topic-expiry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import BrokerProcess


def allocator_of(process: BrokerProcess) -> str | None:
    assert process.proc is not None
    environ = Path(f"/proc/{process.proc.pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"PYTHONMALLOC="):
            return entry.split(b"=", 1)[1].decode()
    return None


@pytest.mark.parametrize(
    ("given", "runs_under"), [(None, "malloc"), ("pymalloc", "pymalloc"), ("malloc", "malloc")]
)
def test_broker_run_starts_under_the_c_allocator_unless_told_otherwise(given, runs_under):
    with BrokerProcess(env={"PYTHONMALLOC": given}) as process:
        assert allocator_of(process) == runs_under
        assert process.proc is not None
        assert process.proc.poll() is None  # (the same process, serving: it exec'd itself)

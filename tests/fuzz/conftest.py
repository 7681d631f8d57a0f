"""One real broker process per fuzz module (its ``BROKER_ENV`` settings), and the summary
line with the number of cases each target ran."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.harness import CASES_RUN, EXAMPLES, Bystander
from tests.support.servers import BrokerProcess


@pytest.fixture(scope="module")
def fuzz_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    env = {
        "BROKER_LOG_LEVEL": "warning",
        "BROKER_LIMITS_IDLE_TIMEOUT_SECONDS": "2",
        # The default engine, as `make run` starts it: what strangers' bytes reach is the
        # durable store's group commit, not only memory.
        "BROKER_STORAGE_KIND": "durable",
        "BROKER_STORAGE_PATH": str(tmp_path_factory.mktemp("fuzz-store")),
        **getattr(request.module, "BROKER_ENV", {}),
    }
    # The broker refuses unknown BROKER_* variables: BROKER_FUZZ_EXAMPLES is the suite's own.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BROKER_FUZZ_EXAMPLES", raising=False)
        broker = BrokerProcess(env=env, args=["--config", "/dev/null"])
        broker.start()
    try:
        yield broker
    finally:
        broker.__exit__(None, None, None)  # kills it if still running


@pytest.fixture(scope="module")
def bystander(request: pytest.FixtureRequest, fuzz_broker: BrokerProcess) -> Iterator[Bystander]:
    watcher = Bystander(fuzz_broker, getattr(request.module, "BYSTANDER_HEADERS", ""))
    try:
        yield watcher
    finally:
        watcher.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES_RUN:
        runs = ", ".join(f"{name}={count}" for name, count in sorted(CASES_RUN.items()))
        terminalreporter.write_line(
            f"fuzz cases run (BROKER_FUZZ_EXAMPLES={EXAMPLES} per target): {runs}"
        )

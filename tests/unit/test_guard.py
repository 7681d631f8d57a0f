"""broker/guard.py: what it contains, what it counts, what it never touches."""

from __future__ import annotations

import logging

import pytest
import trio

from broker.core.guard import WHERES, Faults, guard


def test_an_exception_is_contained_counted_and_logged_with_the_connection(caplog):
    faults = Faults()
    with (
        caplog.at_level(logging.ERROR, "broker.guard"),
        guard(faults, "http", "http 1.2.3.4:5") as f,
    ):
        raise KeyError("bug")
    assert isinstance(f.error, KeyError)
    assert f
    assert faults.counts == {**dict.fromkeys(WHERES, 0), "http": 1}
    [record] = caplog.records
    assert "http 1.2.3.4:5" in record.getMessage()
    assert record.exc_info is not None  # the traceback is in the log line


def test_nothing_raised_nothing_counted():
    faults = Faults()
    with guard(faults, "ws", "ws x") as fault:
        pass
    assert not fault
    assert faults.total == 0


def test_where_may_change_while_the_block_runs():
    faults = Faults()
    with guard(faults, "http", "c") as fault:
        fault.where = "sse"
        raise RuntimeError
    assert faults.counts["sse"] == 1
    assert faults.counts["http"] == 0


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_base_exceptions_pass_through_untouched(exc):
    faults = Faults()
    with pytest.raises(type(exc)) as raised, guard(faults, "peer", "p"):
        raise exc
    assert raised.value is exc
    assert faults.total == 0


def test_a_mixed_group_keeps_the_base_exceptions_and_contains_the_rest():
    faults = Faults()
    interrupt = KeyboardInterrupt()
    with pytest.raises(BaseExceptionGroup) as raised, guard(faults, "redis", "r") as fault:
        raise BaseExceptionGroup("nursery", [RuntimeError("bug"), interrupt])
    assert raised.value.exceptions == (interrupt,)
    assert isinstance(fault.error, RuntimeError)
    assert faults.counts["redis"] == 1


def test_a_group_of_exceptions_is_contained_whole():
    faults = Faults()
    with guard(faults, "ws", "w") as fault:
        raise ExceptionGroup("nursery", [RuntimeError("a"), ValueError("b")])
    assert isinstance(fault.error, ExceptionGroup)
    assert faults.counts["ws"] == 1


def test_unknown_site_is_refused():
    with pytest.raises(ValueError, match="unknown fault site"), guard(Faults(), "nope", "x"):
        pass


async def test_cancellation_is_never_contained():
    faults = Faults()
    with trio.CancelScope() as scope:
        with guard(faults, "http", "c"):
            scope.cancel()
            await trio.sleep_forever()
        pytest.fail("the guard swallowed Cancelled")
    assert scope.cancelled_caught
    assert faults.total == 0


async def test_a_nursery_failing_while_cancelled_is_contained_and_cancellation_goes_on():
    faults = Faults()

    async def bug() -> None:
        raise RuntimeError("bug")

    with trio.CancelScope() as outer:
        with guard(faults, "sse", "s") as fault:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bug)
                outer.cancel()
                await trio.sleep_forever()
    assert outer.cancelled_caught
    assert isinstance(fault.error, RuntimeError)
    assert faults.counts["sse"] == 1

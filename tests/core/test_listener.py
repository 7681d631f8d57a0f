"""The accept loop without sockets: backoff on EMFILE, making room, one log line an episode."""

from __future__ import annotations

import errno
import logging
from functools import partial
from itertools import pairwise

import pytest
import trio

from broker.edge.listener import Acceptor


class ScriptedListener(trio.abc.Listener[object]):
    """``accept`` answers from a script (an errno fails, anything else is a connection),
    then waits forever; it records when each call came."""

    def __init__(self, script: list[object]) -> None:
        self.script = list(script)
        self.calls: list[float] = []
        self.closed = False

    async def accept(self) -> object:
        self.calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if not self.script:
            await trio.sleep_forever()
        item = self.script.pop(0)
        if isinstance(item, int):
            raise OSError(item, "scripted")
        return item

    async def aclose(self) -> None:
        self.closed = True


async def run_acceptor(acceptor: Acceptor, listener: ScriptedListener, until: int) -> list[object]:
    served: list[object] = []

    async def handler(stream: object) -> None:
        served.append(stream)

    acceptor.handler = handler  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(acceptor.serve, [listener], handler_nursery=nursery))
        while len(listener.calls) < until:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert listener.closed
    return served


def gaps(calls: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in pairwise(calls)]


async def test_out_of_descriptors_backs_off_doubling_to_a_second_and_logs_once(
    autojump_clock, caplog
):
    caplog.set_level(logging.INFO, logger="broker.edge.listener")
    listener = ScriptedListener([errno.EMFILE] * 6 + ["conn", errno.ENOBUFS, "conn2"])
    acceptor = Acceptor(lambda stream: trio.lowlevel.checkpoint())  # type: ignore[arg-type]
    served = await run_acceptor(acceptor, listener, until=10)
    assert served == ["conn", "conn2"]
    assert gaps(listener.calls)[:8] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.0, 0.1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "EMFILE" in warnings[0].getMessage()
    stats = acceptor.statistics()
    assert (stats.accepted, stats.failures, stats.backoffs, stats.episodes) == (2, 7, 7, 1)


async def test_a_full_table_makes_room_and_accepts_again_at_once(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="broker.edge.listener")
    room = [16, 16, 0]

    async def make_room() -> int:
        await trio.lowlevel.checkpoint()
        return room.pop(0)

    listener = ScriptedListener([errno.EMFILE, "a", errno.ENFILE, "b", errno.EMFILE, "c"])
    acceptor = Acceptor(lambda stream: trio.lowlevel.checkpoint(), make_room=make_room)  # type: ignore[arg-type]
    served = await run_acceptor(acceptor, listener, until=7)
    assert served == ["a", "b", "c"]
    # Room was made twice: no sleep; the third time nothing could be closed: 0.1 s.
    assert gaps(listener.calls)[:5] == [0.0, 0.0, 0.0, 0.0, 0.1]
    stats = acceptor.statistics()
    assert (stats.failures, stats.made_room, stats.backoffs, stats.episodes) == (3, 32, 1, 1)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1


async def test_a_new_episode_after_a_quiet_spell_is_logged_again(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="broker.edge.listener")

    class Quiet(ScriptedListener):
        async def accept(self) -> object:
            if len(self.calls) == 3:  # after the first episode: 20 s of ordinary accepts
                await trio.sleep(20)
            return await super().accept()

    listener = Quiet([errno.EMFILE, errno.EMFILE, "a", "b", errno.EMFILE, "c"])
    acceptor = Acceptor(lambda stream: trio.lowlevel.checkpoint())  # type: ignore[arg-type]
    await run_acceptor(acceptor, listener, until=7)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("accept failed" in m for m in messages) == 2
    assert any("accept works again: 2 failures" in m for m in messages)
    assert acceptor.statistics().episodes == 2


async def test_other_accept_errors_end_the_loop():
    listener = ScriptedListener([errno.EBADF])
    acceptor = Acceptor(lambda stream: trio.lowlevel.checkpoint())  # type: ignore[arg-type]
    with trio.fail_after(5), pytest.RaisesGroup(pytest.RaisesExc(OSError), flatten_subgroups=True):
        await run_acceptor(acceptor, listener, until=99)

"""Id length through 100 rolling restarts and 3 replacements of a 5-node mesh (issue 20).

A sans-IO simulation, not real processes: each node's real :class:`Membership` decides when
an origin retires (``retire_after``, ``remove_after`` as configured); replication is taken
as instant and complete, and ids are formatted by the real ``positions.format_position``.
Run with ``-s`` to see the figures.
"""

import itertools

import pytest

from broker.cluster.membership import Membership
from broker.core import positions

NODES = 5
RESTARTS = 100
REPLACE_AT = (30, 60, 90)  # the restarts that are replacements (a new node id)
EVENTS_PER_SECOND = 200  # per node
RESTART_EVERY = 60.0  # seconds between two restarts of the rolling deploy
RETIRE_AFTER = 600.0
REMOVE_AFTER = 300.0


def simulate(stable_origins: bool) -> tuple[int, int]:
    """Return (longest id during the deploy, id length once it settled)."""
    counter = itertools.count()
    names = [f"n{i}" for i in range(NODES)]
    next_name = itertools.count(NODES)

    def new_origin():
        return positions.to_base36(36**5 + next(counter) * 7919).rjust(6, "0")[-6:]

    origin = {n: new_origin() for n in names}
    seq = {origin[n]: 0 for n in names}
    members = {
        n: Membership(
            n, n, [], remove_after=REMOVE_AFTER, retire_after=RETIRE_AFTER, origin=origin[n]
        )
        for n in names
    }
    vectors = {n: {} for n in names}
    retired = {n: set() for n in names}
    recently = {}  # origin -> when some node retired it (said in heartbeats)
    last_at = {}  # origin -> publish time of its newest event (the events carry it)
    longest = 0
    now = 0.0
    restart = 0
    next_restart = RESTART_EVERY
    end = RESTART_EVERY * (RESTARTS + 1) + REMOVE_AFTER + RETIRE_AFTER + 60
    while now < end:
        now += 1.0
        if restart < RESTARTS and now >= next_restart:
            restart += 1
            next_restart += RESTART_EVERY
            old = names[restart % len(names)]
            if restart in REPLACE_AT:  # a new machine, a new node id
                new = f"n{next(next_name)}"
                names[names.index(old)] = new
                del members[old], vectors[old], retired[old]
                for m in members.values():
                    m.unlinked(old, now)
            else:
                new = old
            if new != old or not stable_origins:
                origin[new] = new_origin()
                seq.setdefault(origin[new], 0)
            members[new] = Membership(
                new,
                new,
                [],
                remove_after=REMOVE_AFTER,
                retire_after=RETIRE_AFTER,
                origin=origin[new],
            )
            vectors[new] = {}  # memory-only: it comes back empty and catches up
            retired[new] = set()
        for o in [o for o, at in recently.items() if now - at > RETIRE_AFTER]:
            del recently[o]
        for n in names:
            seq[origin[n]] += EVENTS_PER_SECOND
            last_at[origin[n]] = now
        for n in names:  # heartbeats: what another node retired lately, retire too
            membership = members[n]
            for o in list(vectors[n]):
                if o in recently and membership.may_retire(o):
                    retired[n].add(o)
                    del vectors[n][o]
        held = {}
        for n in names:  # replication: every origin some node still has
            held.update(vectors[n])
        for n in names:
            held[origin[n]] = seq[origin[n]]
        for n in names:
            membership = members[n]
            for other in names:
                if other != n:
                    membership.linked(other, other, now, origin[other])
            membership.expire(now)
            vector = {o: s for o, s in held.items() if o not in retired[n]}
            last_event = {o: last_at[o] for o in vector if o != origin[n]}
            for o in membership.retirable(last_event, wall_now=now):
                retired[n].add(o)
                del vector[o]
                recently[o] = now
            vectors[n] = vector
            longest = max(longest, len(positions.format_position(vector)))
    settled = max(len(positions.format_position(v)) for v in vectors.values())
    return longest, settled


@pytest.mark.parametrize("stable_origins", [True, False], ids=["durable", "memory-only"])
def test_ids_stay_bounded_through_rolling_restarts_and_replacements(stable_origins):
    longest, settled = simulate(stable_origins)
    print(
        f"\n5 nodes, {RESTARTS} rolling restarts every {RESTART_EVERY:.0f} s, "
        f"{len(REPLACE_AT)} replacements, origins {'stable' if stable_origins else 'new'} "
        f"per restart: longest id {longest} chars, after settling {settled} chars"
    )
    assert settled <= 64  # the 5 live origins, 4 base-36 digits of seq each
    # during the deploy: a replaced node's origin stays until its newest event is
    # retire_after old (one more pair); with a new origin per restart, every restart of the
    # last retire_after seconds adds one (600 s / 60 s = 10 more pairs)
    assert longest <= (6 if stable_origins else 5 + 10) * 12

import random

import pytest

from broker.core import positions
from broker.core.errors import BadEventId


def test_round_trip_and_sorted_pairs():
    vector = {"zz1abc": 35, "aa0000": 0, "m": 36**3}
    text = positions.format_position(vector)
    assert text == "aa0000-0.m-1000.zz1abc-z"
    assert positions.parse_position(text) == vector


def test_ids_are_cors_safe_and_short():
    origins = [positions.new_origin() for _ in range(16)]
    text = positions.format_position(dict.fromkeys(origins, 10**9))
    assert all(c.isalnum() or c in ".-" for c in text)
    assert len(positions.format_position({o: 10**9 for o in origins[:8]})) <= 128


@pytest.mark.parametrize(
    "bad", ["", "42", "a-", "-1", "A-1", "a-01", "a-1.a-2", "a-1..b-2", "a-1 ", "a_b-1", "x" * 2000]
)
def test_unparsable_ids_raise(bad):
    with pytest.raises(BadEventId):
        positions.parse_position(bad)


def test_new_origins_differ():
    assert len({positions.new_origin() for _ in range(100)}) == 100


def test_base36_matches_the_plain_digit_loop_counting_up_and_jumping():
    def plain(number: int) -> str:
        digits = ""
        while True:
            number, digit = divmod(number, 36)
            digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
            if not number:
                return digits

    rng = random.Random(7)
    numbers = [*range(5000), *range(1295 * 1296 - 50, 1296 * 1296 + 50)]
    numbers += [rng.randrange(10**15) for _ in range(2000)] + [36**k for k in range(12)]
    for number in numbers + numbers[::-1]:
        assert positions.to_base36(number) == plain(number)

"""A command's ``ref`` is echoed only when both codecs can write it back (issue 17 fuzz)."""

import json

import msgpack
import pytest

from broker.core.errors import BadRequest
from broker.wire.commands import MAX_REF_CHARS, command_ref, parse_command

PLAIN = [None, True, 0, -(2**63), 2**64 - 1, 1.5, "", "x" * MAX_REF_CHARS]
NOT_PLAIN = [b"", b"x", [1], {"a": 1}, 2**64, -(2**63) - 1, float("nan"), float("inf"), "x" * 257]


@pytest.mark.parametrize("ref", PLAIN)
def test_plain_refs_are_echoed_and_both_codecs_can_write_them(ref):
    command = {"op": "subscribe", "topics": ["a"], "ref": ref}
    assert command_ref(command) == ref
    assert parse_command(command, max_topics=4).ref == ref
    json.dumps({"ref": ref})
    msgpack.packb({"ref": ref})


@pytest.mark.parametrize("ref", NOT_PLAIN)
def test_other_refs_make_a_bad_request_answered_with_a_null_ref(ref):
    command = {"op": "publish", "topic": "a", "data": 1, "ref": ref}
    assert command_ref(command) is None
    with pytest.raises(BadRequest, match="'ref' must be"):
        parse_command(command, max_topics=4)


def test_a_message_that_is_not_an_object_has_no_ref():
    assert command_ref([1, 2]) is None
    assert command_ref("x") is None

"""Fuzz JWTs with auth on: random strings, mutated valid tokens, and tokens signed with the
right secret whose headers and claims hold anything (harness.py has the properties).

Publishing needs a token here, so a 202 means the token was valid and allowed it; every
other answer is a 4xx ``{"error","code"}`` and publishes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.harness import FUZZ_SETTINGS, TOPICS, Target

SECRET = "fuzz-secret-that-is-long-enough-for-hs256"
BROKER_ENV = {
    "BROKER_AUTH_SECRET": SECRET,
    "BROKER_AUTH_AUDIENCE": "fz",
    "BROKER_AUTH_ISSUER": "fz-issuer",
    "BROKER_WEBSOCKET_ALLOW_PUBLISH": "true",
}

#: Tokens must expire ([auth] require_exp): a day from now (the suite is not that slow).
EXP = int(time.time()) + 86400

GOOD = jwt.encode(
    {
        "publish": ["**"],
        "subscribe": ["**"],
        "sub": "fuzz",
        "aud": "fz",
        "iss": "fz-issuer",
        "exp": EXP,
    },
    SECRET,
    "HS256",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


claim_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["**", "fz/*", "fz/**", "*", "fz/a", "fz", "fz-issuer"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
claims = st.fixed_dictionaries(
    {
        "aud": st.one_of(st.just("fz"), st.just(["x", "fz"]), claim_values),
        "iss": st.one_of(st.just("fz-issuer"), claim_values),
        "exp": st.one_of(st.just(EXP), claim_values),
    },
    optional={name: claim_values for name in ("publish", "subscribe", "sub", "nbf", "iat", "jti")},
)
headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "none", "HS512", "RS256", "ES256", ""])},
    optional={"typ": claim_values, "kid": claim_values, "crit": claim_values, "b64": claim_values},
)


@st.composite
def signed(draw: st.DrawFn) -> str:
    """Signed with the right secret (HS256), whatever the header says and the claims hold."""
    header = draw(headers)
    payload = draw(claims)
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


@st.composite
def mutated(draw: st.DrawFn) -> str:
    token = draw(st.sampled_from([GOOD, draw(signed())]))
    kind = draw(st.sampled_from(["flip", "cut", "add", "swap", "dots"]))
    at = draw(st.integers(0, len(token) - 1))
    if kind == "flip":
        return (
            token[:at]
            + draw(st.characters(max_codepoint=0x7E, min_codepoint=0x21))
            + token[at + 1 :]
        )
    if kind == "cut":
        return token[:at]
    if kind == "add":
        return token[:at] + draw(st.text(max_size=8)) + token[at:]
    if kind == "swap":
        head, body, mac = token.split(".")
        return ".".join(draw(st.permutations([head, body, mac])))
    return token.replace(".", draw(st.sampled_from(["", "..", ". ", "=."])))


tokens = st.one_of(
    signed(),
    mutated(),
    st.text(max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


@st.composite
def authorized_request(draw: st.DrawFn) -> bytes:
    token = draw(tokens)
    where = draw(st.sampled_from(["bearer", "bearer", "cookie", "query", "scheme"]))
    topic = draw(st.sampled_from(TOPICS))
    kind = draw(st.sampled_from(["publish", "publish", "sse", "ws", "delete"]))
    fields = {"Host": "x"}
    query = ""
    if where == "bearer":
        fields["Authorization"] = f"Bearer {token}"
    elif where == "scheme":
        fields["Authorization"] = token
    elif where == "cookie":
        fields["Cookie"] = f"broker_token={token}"
    else:
        query = "?access_token=" + token
    if kind == "publish":
        line, body = f"POST /topics/{topic}{query}", b'{"fuzz":1}'
        fields["Content-Type"] = "application/json"
        fields["Content-Length"] = str(len(body))
    elif kind == "delete":
        line, body = f"DELETE /topics/{topic}/retained{query}", b""
    elif kind == "sse":
        line, body = f"GET /topics/{topic}/events{query}", b""
    else:
        line, body = f"GET /topics/{topic}/ws{query}", b""
        fields.update(
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            }
        )
    head = f"{line} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("utf-8", "surrogateescape") + body


def test_tokens(fuzz_broker, bystander):
    """Random, mutated and validly signed tokens with any claims, in every place a token goes."""
    target = Target("jwt", fuzz_broker, bystander)

    @FUZZ_SETTINGS
    @example(  # a valid token: 202 (the fuzz's own baseline)
        f"POST /topics/fz/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GOOD}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1\r\n\r\n1".encode()
    )
    @example(  # found here: trailing CRLFs on a handed-off connection get hypercorn's own 400
        b"DELETE /topics/fz/b/retained HTTP/1.1\r\nHost: x\r\nAuthorization: \r\n\r\n\r\n\r\n"
    )
    @given(authorized_request())
    def case(data: bytes) -> None:
        target.check(target.exchange(data), case=data)

    case()
    target.finish(token=GOOD)

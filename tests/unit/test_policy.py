"""The edge policy without sockets: the origin rule, duplicate credentials, exp, DELETE."""

import time

import jwt
import pytest

from broker.edge.auth import (
    Authenticator,
    CrossOrigin,
    DuplicateCredentials,
    Forbidden,
    TokenWithoutExp,
    Unauthorized,
    bearer_token,
)
from broker.edge.cors import CorsPolicy
from broker.edge.policy import Policy
from broker.edge.routes import match

SECRET = "a-shared-secret-that-is-long-enough-32"
APP = "https://app.example"


def token(claims, ttl=600.0):
    if ttl is not None:
        claims = {"exp": time.time() + ttl, **claims}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def policy(origins=(APP,)):
    return Policy(
        auth=Authenticator(key=SECRET, anonymous_subscribe=("public/**",), leeway_seconds=0),
        cors=CorsPolicy(origins, allow_credentials="*" not in origins),
    )


WRITER = token({"publish": ["**"], "subscribe": ["**"]})
COOKIE = {"cookie": f"broker_token={WRITER}", "host": "broker.example:8080"}
HEADER = {"authorization": f"Bearer {WRITER}", "host": "broker.example:8080"}


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({**COOKIE, "origin": APP}, True),
        ({**COOKIE, "origin": "http://broker.example:8080"}, True),  # the broker's own
        ({**COOKIE, "origin": "http://BROKER.example:8080"}, True),
        ({**COOKIE, "origin": "https://evil.example"}, False),
        ({**COOKIE, "origin": "http://broker.example:9999"}, False),  # another port
        ({**COOKIE, "origin": "null"}, False),
        (COOKIE, False),  # no Origin
        ({**HEADER, "origin": "https://evil.example"}, True),  # no ambient authority
        (HEADER, True),
    ],
)
def test_a_cookie_changes_state_only_from_an_allowed_origin(headers, allowed):
    route = match("POST", "/topics/a")
    if allowed:
        assert policy().admit_publish(route, headers, "1.2.3.4", ["a"], 0.0).token
    else:
        with pytest.raises(CrossOrigin):
            policy().admit_publish(route, headers, "1.2.3.4", ["a"], 0.0)


def test_a_wildcard_allows_any_origin_but_never_the_cookie():
    route = match("GET", "/topics/public/a/ws")
    anyone = policy(("*",))
    assert not anyone.admit_subscribe(route, {"origin": "https://x.example"}, upgrade=True).token
    with pytest.raises(CrossOrigin):
        anyone.admit_subscribe(route, {**COOKIE, "origin": "https://x.example"}, upgrade=True)


def test_a_websocket_upgrade_checks_any_origin_it_carries():
    route = match("GET", "/topics/public/a/ws")
    with pytest.raises(CrossOrigin):
        policy().admit_subscribe(route, {"origin": "https://evil.example"}, upgrade=True)
    with pytest.raises(CrossOrigin):
        policy(()).admit_subscribe(route, {"origin": "https://evil.example"}, upgrade=True)
    assert policy().admit_subscribe(route, {}, upgrade=True) is not None
    # An SSE stream (no upgrade) changes nothing: its Origin is for CORS alone.
    sse = match("GET", "/topics/public/a/events")
    assert policy().admit_subscribe(sse, {"origin": "https://evil.example"}) is not None


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer a.b.c, Bearer d.e.f"},
        {"cookie": "broker_token=a.b.c; x=1, broker_token=d.e.f"},
        {"cookie": "broker_token=a.b.c; broker_token=d.e.f"},
    ],
)
def test_two_different_tokens_are_refused(headers):
    with pytest.raises(DuplicateCredentials):
        bearer_token(headers, {}, cookie="broker_token", query_token=False)
    with pytest.raises(DuplicateCredentials):
        bearer_token({}, {"access_token": ["a", "b"]}, cookie="", query_token=True)


def test_the_same_cookie_twice_is_one_token():
    headers = {"cookie": "broker_token=a.b.c; theme=dark; broker_token=a.b.c"}
    assert bearer_token(headers, {}, cookie="broker_token", query_token=False) == ("a.b.c", True)


def test_exp_is_required_unless_configured_and_becomes_the_expiry():
    auth = Authenticator(key=SECRET, leeway_seconds=5)
    with pytest.raises(TokenWithoutExp):
        auth.identify(token({"publish": ["a"]}, ttl=None))
    lenient = Authenticator(key=SECRET, require_exp=False)
    assert lenient.identify(token({"publish": ["a"]}, ttl=None)).expires is None
    exp = time.time() + 60
    assert auth.identify(jwt.encode({"exp": exp}, SECRET, algorithm="HS256")).expires == exp + 5


def test_delete_needs_the_publish_claim_or_admin():
    auth = policy().auth
    owner = auth.identify(token({"publish": ["jobs/*"]}))
    admin = auth.identify(token({"admin": True}))
    reader = auth.identify(token({"subscribe": ["**"], "admin": "yes"}))  # not true: no admin
    auth.check_admin(owner, "jobs/1")
    auth.check_admin(admin, "anything")
    with pytest.raises(Forbidden):
        auth.check_admin(owner, "other")
    with pytest.raises(Forbidden):
        auth.check_admin(reader, "jobs/1")
    with pytest.raises(Unauthorized):
        auth.check_admin(auth.identify(None), "jobs/1")

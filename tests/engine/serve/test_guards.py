"""engine/serve/guards.py on its own, without a server: every way an API key can be almost right,
the body-size limit at its boundary (declared or streamed), and the bytes held across requests."""
from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from engine.serve.guards import BodyBudget, Refusal, check_bearer, read_body

KEY = "s3cret-Key"
UNAUTHORIZED = (401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "unauthorized",
                {"WWW-Authenticate": "Bearer"})


def request(*headers: tuple[bytes, bytes], chunks: list[bytes] = (), received: list | None = None) -> Request:
    """A Starlette request with these raw headers whose body arrives in `chunks`; each chunk taken
    from the client is appended to `received`."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    messages = messages or [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        message = messages.pop(0)
        if received is not None:
            received.append(message["body"])
        return message

    return Request({"type": "http", "method": "POST", "path": "/", "headers": list(headers)}, receive)


def auth(value: bytes) -> tuple[bytes, bytes]:
    return (b"authorization", value)


def refusal_of(call) -> tuple:
    with pytest.raises(Refusal) as info:
        call()
    refusal = info.value
    assert str(refusal) == refusal.message
    return refusal.status, refusal.message, refusal.reason, refusal.headers


@pytest.mark.parametrize("value", [
    b"Bearer s3cret-Key", b"bearer s3cret-Key", b"BEARER s3cret-Key", b"bEaReR s3cret-Key",
    b"Bearer  s3cret-Key", b"Bearer s3cret-Key ", b"Bearer \t s3cret-Key\t\r\n",  # whitespace around the key
])
def test_the_right_key_gets_in(value):
    assert check_bearer(request(auth(value)), KEY) is None


@pytest.mark.parametrize("value", [
    b"", b" ", b"Bearer", b"Bearer ", b"Bearer   ",                        # empty, whitespace, no key
    b"Bearer s3cret-Ke", b"Bearer s", b"Bearer s3cret-Key2", b"Bearer s3cret-Key s3cret-Key",  # prefix, longer
    b"Bearer s3cret-Kez", b"Bearer t3cret-Key", b"Bearer s3cret_Key",    # one character off, at either end
    b"Bearer s3cret-key", b"Bearer S3CRET-KEY",                          # case of the key matters
    b"Bearer s3cret-K\xc3\xa9y", b"Bearer s3cret-Key\x00", b"Bearer s3cret-Key\xa0",  # non-ASCII, NUL, NBSP
    b"Basic s3cret-Key", b"Token s3cret-Key", b"Bearers3cret-Key", b"s3cret-Key", b"Bearer\ts3cret-Key",
    b"XBearer s3cret-Key", b"Beare s3cret-Key", b" Bearer s3cret-Key", b"Bearer: s3cret-Key",
])
def test_an_almost_right_key_is_refused_401(value):
    assert refusal_of(lambda: check_bearer(request(auth(value)), KEY)) == UNAUTHORIZED


def test_no_authorization_header_is_refused_and_only_that_header_counts():
    assert refusal_of(lambda: check_bearer(request(), KEY)) == UNAUTHORIZED
    others = [(b"x-authorization", b"Bearer s3cret-Key"), (b"proxy-authorization", b"Bearer s3cret-Key"),
              (b"cookie", b"Bearer s3cret-Key")]
    assert refusal_of(lambda: check_bearer(request(*others), KEY)) == UNAUTHORIZED
    assert check_bearer(request(*others, auth(b"Bearer s3cret-Key")), KEY) is None


def test_the_first_authorization_header_decides():
    right, wrong = auth(b"Bearer s3cret-Key"), auth(b"Bearer wrong")
    assert check_bearer(request(right, wrong), KEY) is None
    assert refusal_of(lambda: check_bearer(request(wrong, right), KEY)) == UNAUTHORIZED


def test_non_ascii_keys_compare_their_utf8_bytes():
    key = "clé-🔑"
    assert check_bearer(request(auth(b"Bearer cl\xc3\xa9-\xf0\x9f\x94\x91")), key) is None  # UTF-8
    for value in (b"Bearer cl\xe9-\xf0\x9f\x94\x91",   # é in latin-1
                  b"Bearer cle\xcc\x81-\xf0\x9f\x94\x91",  # é decomposed (e + combining acute)
                  b"Bearer cl\xc3\xa9-",                # the key cut inside the emoji's neighbourhood
                  b"Bearer cl\xc3\xa9-\xf0\x9f\x94"):   # cut inside the emoji
        assert refusal_of(lambda: check_bearer(request(auth(value)), key)) == UNAUTHORIZED


def test_no_key_means_open():
    for headers in ((), (auth(b"Bearer anything"),), (auth(b"Basic x"),)):
        assert check_bearer(request(*headers), None) is None


def test_refusal_holds_its_fields():
    refusal = Refusal(413, "too big", "too_large")
    assert (refusal.status, refusal.message, refusal.reason, refusal.headers, str(refusal)) == \
        (413, "too big", "too_large", {}, "too big")
    assert Refusal(503, "m", "busy", {"Retry-After": "1"}).headers == {"Retry-After": "1"}


BUSY = (503, "the server is receiving too many bodies at once; retry later", "busy", {"Retry-After": "1"})


def test_claims_hold_bytes_until_released():
    budget = BodyBudget(100)
    assert (budget.capacity, budget.held) == (100, 0)
    a, b = budget.claim(), budget.claim()
    assert (a.budget, a.size) == (budget, 0)
    a.grow(30)
    a.grow(30)   # the same size again: nothing more
    a.grow(10)   # smaller: still 30 held
    assert (a.size, budget.held) == (30, 30)
    a.grow(45)   # 15 more
    b.grow(55)   # exactly full
    assert (a.size, b.size, budget.held) == (45, 55, 100)
    assert refusal_of(lambda: a.grow(46)) == BUSY
    assert (a.size, budget.held) == (45, 100)  # a refused claim holds what it held
    a.release()
    assert (a.size, budget.held) == (0, 55)
    a.grow(45)  # a released claim can hold again
    assert (a.size, budget.held) == (45, 100)
    b.release()
    a.release()
    assert budget.held == 0


def test_one_claim_alone_may_fill_the_budget_but_not_pass_it():
    budget = BodyBudget(10)
    claim = budget.claim()
    assert refusal_of(lambda: claim.grow(11)) == BUSY
    assert (claim.size, budget.held) == (0, 0)
    claim.grow(10)
    assert (claim.size, budget.held) == (10, 10)


def read(req: Request, limit: int, claim) -> bytes:
    return asyncio.run(read_body(req, limit, claim))


def too_large(limit: int) -> tuple:
    return 413, f"body larger than {limit} bytes", "too_large", {}


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_of_exactly_the_limit_is_read_one_byte_more_is_413(declared):
    for size, ok in ((10, True), (11, False)):
        chunks = [b"x" * (size - 4), b"y" * 4]  # streamed in two parts: the limit is on their sum
        headers = [(b"content-length", str(size).encode())] if declared else []
        claim = BodyBudget(1000).claim()
        if ok:
            assert read(request(*headers, chunks=chunks), 10, claim) == b"x" * (size - 4) + b"yyyy"
            assert claim.size == size
        else:
            assert refusal_of(lambda: read(request(*headers, chunks=chunks), 10, claim)) == too_large(10)


def test_a_declared_length_past_the_limit_is_refused_before_a_byte_is_read():
    received = []
    req = request((b"content-length", b"11"), chunks=[b"x"], received=received)
    assert refusal_of(lambda: read(req, 10, BodyBudget(1000).claim())) == too_large(10)
    assert received == []


def test_a_declared_length_is_held_whole_from_the_start():
    budget = BodyBudget(1000)
    claim = budget.claim()
    assert read(request((b"content-length", b"40"), chunks=[b"abc", b"de"]), 100, claim) == b"abcde"
    assert (claim.size, budget.held) == (40, 40)  # the declared 40, not the 5 that came
    received, full = [], BodyBudget(30).claim()
    req = request((b"content-length", b"40"), chunks=[b"abc"], received=received)
    assert refusal_of(lambda: read(req, 100, full)) == BUSY
    assert received == [] and full.size == 0


def test_a_streamed_body_is_held_as_it_grows_and_refused_when_the_budget_is_full():
    budget = BodyBudget(8)
    other = budget.claim()
    other.grow(3)
    claim, received = budget.claim(), []
    req = request(chunks=[b"abc", b"de", b"f"], received=received)
    assert refusal_of(lambda: read(req, 100, claim)) == BUSY
    assert received == [b"abc", b"de", b"f"] and (claim.size, budget.held) == (5, 8)


@pytest.mark.parametrize("value", [b"abc", b"-5", b"+5", b" 5", b"\xb2", b"", b"1e3"])
def test_a_content_length_that_is_not_ascii_digits_is_ignored_and_the_stream_counted(value):
    claim = BodyBudget(100).claim()
    assert read(request((b"content-length", value), chunks=[b"hello"]), 10, claim) == b"hello"
    assert claim.size == 5
    req = request((b"content-length", value), chunks=[b"hello", b"world!"])
    assert refusal_of(lambda: read(req, 10, BodyBudget(100).claim())) == too_large(10)


def test_an_empty_body_is_empty():
    claim = BodyBudget(100).claim()
    assert read(request((b"content-length", b"0")), 10, claim) == b"" and claim.size == 0

"""The request id: an incoming one (trusted, well formed), a W3C trace id, or a new one."""

from __future__ import annotations

import re

import pytest

from scalekit.core import context
from scalekit.frontend.request_ids import current, request_id_of, trace_id
from scalekit.tickets.ticket import request_id as tickets_request_id

NEW = re.compile(r"[0-9a-f]{32}\Z")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"

KEPT = [
    "0123456789abcdef0123456789abcdef",  # nginx $request_id
    "0b9c8a3e-4f1d-4c2a-9e7b-2d6f1a0c5e3b",  # a UUID
    "7F000001:D2A4_7F000001:1F90_65A1B2C3_0001:2F3D",  # haproxy's unique-id-format
    "req-7f3a",
    "svc.web@node1",
    "a",
    "x" * 128,
]
REFUSED = [
    "",
    "x" * 129,
    "two words",
    "abc,def",  # two X-Request-ID headers joined by the server
    "abc\r\nX-Admin: 1",
    "abc\n",
    "caf\u00e9",
    '"quoted"',
    "../../etc/passwd",
    "a;b",
    "<script>",
    "%0d%0a",
]


def environ(**headers: str) -> dict:
    return {"HTTP_" + name.upper(): value for name, value in headers.items()}


@pytest.mark.parametrize("given", KEPT)
def test_a_well_formed_incoming_id_is_kept_and_tickets_keep_it_too(given):
    assert request_id_of(environ(x_request_id=given), True) == given
    assert tickets_request_id(environ(x_request_id=given)) == given


@pytest.mark.parametrize("given", REFUSED)
def test_a_malformed_incoming_id_is_replaced_by_a_new_one(given):
    made = request_id_of(environ(x_request_id=given), True)
    assert NEW.match(made) and made != given


def test_an_untrusted_peer_s_ids_are_not_believed():
    made = request_id_of(environ(x_request_id="req-7f3a", traceparent=TRACEPARENT), False)
    assert NEW.match(made) and made not in ("req-7f3a", TRACE)


def test_a_traceparent_gives_its_trace_id_and_x_request_id_comes_first():
    assert request_id_of(environ(traceparent=TRACEPARENT), True) == TRACE
    both = environ(x_request_id="req-7f3a", traceparent=TRACEPARENT)
    assert request_id_of(both, True) == "req-7f3a"
    refused = environ(x_request_id="bad id", traceparent=TRACEPARENT)
    assert request_id_of(refused, True) == TRACE


@pytest.mark.parametrize(
    "header",
    [
        f"01-{TRACE}-00f067aa0ba902b7-01",  # a later version, same fields
        f"cc-{TRACE}-00f067aa0ba902b7-09-what-comes-next",  # a later version's extra field
        f"00-{TRACE}-00f067aa0ba902b7-00",  # not sampled: still the trace
    ],
)
def test_valid_traceparents(header):
    assert trace_id(header) == TRACE


@pytest.mark.parametrize(
    "header",
    [
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # uppercase hex
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # version ff is forbidden
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
        f"01-{TRACE}-00f067aa0ba902b7-01extra",  # a later version's extra needs its dash
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",  # short trace id
        f"00-{TRACE}-00f067aa0ba902b7-1",  # short flags
        f"0-{TRACE}-00f067aa0ba902b7-01",
        f" 00-{TRACE}-00f067aa0ba902b7-01",
        f"00_{TRACE}_00f067aa0ba902b7_01",
        "",
        "garbage",
    ],
)
def test_invalid_traceparents_are_ignored(header):
    assert trace_id(header) is None
    made = request_id_of(environ(traceparent=header), True)
    assert NEW.match(made) and made != TRACE


def test_made_ids_are_128_random_bits_and_differ():
    made = {request_id_of({}, True) for _ in range(2000)}
    assert len(made) == 2000 and all(NEW.match(one) for one in made)


def test_current_is_the_context_s_request_id():
    assert current() is None
    token = context.request_id.set("req-7f3a")
    try:
        assert current() == "req-7f3a"
    finally:
        context.request_id.reset(token)
    assert current() is None

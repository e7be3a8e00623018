"""The parser against an independent one (h11), and against random bytes (hypothesis)."""

import json
import re

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import GOOD, send, split, status_of, worker_pid
from .test_http import CASES

# Where runprefork is stricter than h11, on purpose; anything else must agree.
STRICTER_THAN_H11 = {
    "http20": "RFC 9110 §15.6.6: 505 for a major version we do not serve; h11 takes any HTTP/x.y",
    "http12": "llhttp knows HTTP/1.0 and 1.1 only; h11 takes any HTTP/x.y",
    "http30": "as http20",
    "cl-and-te": "RFC 9112 §6.1 lets a server reject it, and it is the TE.CL smuggling vector (CVE-2024-6827)",
    "te-and-cl": "as cl-and-te",
    "chunked-on-http10": "RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 MUST be treated as faulty framing",
    "cl-duplicate-same": "RFC 9112 §6.3 allows merging identical lengths; llhttp refuses any duplicate",
    "cl-list": "as cl-duplicate-same",
    "obs-fold": "RFC 9112 §5.2: reject or unfold; we reject",
    "bare-lf": "RFC 9112 §2.2 only MAY accept a bare LF; it is a smuggling vector between parsers",
    "bare-lf-in-headers": "as bare-lf",
    "control-in-value": "RFC 9110 §5.5: CTLs are not field content",
    "trailer-content-length": "RFC 9110 §6.5.1: framing fields are forbidden in trailers",
    "trailer-host": "RFC 9110 §6.5.1: routing fields are forbidden in trailers",
    "trailer-transfer-encoding": "as trailer-content-length",
    "request-line-too-long": "PREFORK_LIMIT_REQUEST_LINE (h11's own limit is 16 KiB)",
    "too-many-fields": "PREFORK_LIMIT_REQUEST_FIELDS",
    "field-too-long": "PREFORK_LIMIT_REQUEST_FIELD_SIZE",
    "expect-other": "RFC 9110 §10.1.1: 417 for an expectation we cannot meet",
    "connect": "not a proxy: CONNECT is refused",
    "authority-form-on-get": "RFC 9112 §3.2.3: authority-form is for CONNECT only",
    "asterisk-on-get": "RFC 9112 §3.2.4: asterisk-form is for OPTIONS only",
    "bad-scheme": "absolute-form serves http and https targets only",
    "content-type-twice": "RFC 9110 §5.3: Content-Type is a singleton field; two are not one representation",
    "unknown-method": "RFC 9110 §9.1: 501 for a method the server does not implement",
    "trailers-past-the-field-count": "PREFORK_LIMIT_REQUEST_FIELDS counts trailers too (docs/http.md)",
    "trailer-too-long": "PREFORK_LIMIT_REQUEST_FIELD_SIZE bounds trailer lines too (docs/http.md)",
}


def h11_verdict(data):
    """(accepted, body) as h11 parses `data` as a server."""
    conn = h11.Connection(h11.SERVER)
    body = b""
    try:
        conn.receive_data(data)
        conn.receive_data(b"")
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return False, None
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return True, body
    except h11.RemoteProtocolError:
        return False, None


def test_h11_agrees_except_where_we_are_stricter_on_purpose(server):
    differences = {}
    for name, data, _ in CASES:
        response = send(server, data)
        ours = status_of(response) < 400
        theirs, body = h11_verdict(data)
        if ours != theirs:
            differences[name] = (ours, theirs)
        elif ours:
            assert json.loads(split(response)[1])["body"].encode("latin-1") == body, name
    assert set(differences) == set(STRICTER_THAN_H11)
    assert all(not ours for ours, _ in differences.values()), "we must never be the lenient one"


RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.1 [1-5]\d\d [^\r\n]*\r\n(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n]*\r\n)*\r\n"
)
SEEDS = [data for _, data, _ in CASES if len(data) < 2000]
NASTY = [b"\r", b"\n", b"\r\n", b"\0", b" ", b"\t", b":", b",", b"\x7f", b"\xff", b"0", b"-1",
         b"chunked", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"HTTP/1.0", b"%00", b"?#"]


@st.composite
def mutated_requests(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "random"]))
        if action == "insert":
            data[at:at] = draw(st.sampled_from(NASTY))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif action == "replace":
            data[at:at + 1] = draw(st.sampled_from(NASTY))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(mutated_requests(), st.binary(max_size=300)))
def test_fuzzed_bytes_get_a_well_formed_answer_or_a_close(server, data):
    response = send(server, data)
    if not response:
        return  # closing without a word is allowed (nothing parseable arrived)
    interim, final = b"HTTP/1.1 100 Continue\r\n\r\n", response
    if final.startswith(interim):
        final = final[len(interim):]
    match = RESPONSE_HEAD.match(final)
    assert match, f"malformed response {response[:200]!r} to {data[:200]!r}"
    assert b"\r\nConnection: close\r\n" in match.group(0)


def test_no_worker_died_of_the_fuzzing(server):
    # Fuzz here too, so the check never rests on the order tests run in; the
    # module's single worker must still be the one the arbiter booted first.
    test_fuzzed_bytes_get_a_well_formed_answer_or_a_close(server)
    assert send(server, GOOD).startswith(b"HTTP/1.1 200")
    assert [worker_pid(server)] == server.first_workers
    assert "was killed" not in server.output and "exited with code" not in server.output

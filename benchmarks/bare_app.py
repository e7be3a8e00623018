"""The benchmark's "bare app": a WSGI callable with no Django behind it.

It answers what the transport ceiling (nginx `return 200`) answers, so a
server serving it spends its CPU on itself: accepting, parsing, building the
environ, writing the response. benchmarks/run.py starts every server a
second time on it.
"""

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [BODY]

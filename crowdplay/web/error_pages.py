"""HAProxy's answers on the public port in the app's one error shape (``crowdplay.web.errors``):
``{"error": <kind>, "reason": <what to do about it>}``, ``Content-Type: application/json``.

Three kinds of answer reach a client without passing through the app's error handlers:

- HAProxy's own errors: no replica to send a request to (503), a replica that failed before
  answering (502), a refusal by a rule (403, 429). Its built-in pages are HTML, and Serve's
  configuration turns 502-504 into a plain-text 500. ``http_error_rules`` replaces them
  (``http-error`` in ``defaults``) for every status HAProxy 2.8 can answer by itself (it refuses
  ``http-error`` for any other). Not the answers of its HTTP/1 parser, which HAProxy 2.8 writes
  before any configuration applies, always its built-in HTML: a request head it cannot parse (400)
  or that never completes (408) (haproxy/haproxy#3032, fixed in HAProxy 3.2).
- The answers Serve's configuration makes HAProxy write itself (``http-request return``: the
  health check's 503, the 404 of a path no application serves), all plain text: ``json_return``.
- Answers the replica's stack writes outside the app: Serve's (its backpressure 503, an
  exception's 500, a request timeout's 408), uvicorn's (400 "Invalid HTTP request received."),
  Starlette's own ``FileResponse`` (400 and 416 for a bad ``Range``). ``json_net`` has HAProxy
  replace any answer of status 400 or above that is not JSON with this table's, for its status
  (Retry-After kept), or, for a status not in the table, with its class's (400 or 500).

Only the standard library is imported: HAProxy's launcher (``crowdplay.web.haproxy``) runs this.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

#: The line by which ``http_error_rules`` are found in ``defaults`` (the rewrite is idempotent).
ERRORS_MARK = "# crowdplay: HAProxy's own error answers in the app's JSON shape (crowdplay.web.error_pages)"
#: The line by which ``json_net``'s rules are found in the ingress's frontend.
NET_MARK = "# crowdplay: a replica's answer of status >= 400 that is not JSON is replaced by the JSON one for its status"
JSON = "application/json"


@dataclass(frozen=True)
class ErrorPage:
    """One status's answer: its ``error`` kind and its ``reason``."""

    status: int
    kind: str
    reason: str

    def body(self) -> str:
        """The JSON body, compact."""
        return json.dumps({"error": self.kind, "reason": self.reason}, separators=(",", ":"))


#: An unexpected failure: the app's own ``internal_error`` (``crowdplay.web.app``) says the same.
INTERNAL = ErrorPage(500, "internal_error", "the server failed to answer this request; it has been logged")
#: What HAProxy says for every status it can answer by itself (HAProxy 2.8's list).
HAPROXY_PAGES = (
    ErrorPage(400, "bad_request", "the request is not valid: check its method, path and headers (at most 100 headers, 15 KB in all)"),
    ErrorPage(401, "unauthorized", "this request needs credentials"),
    ErrorPage(403, "forbidden", "this request is refused"),
    ErrorPage(404, "not_found", "nothing is served at this path"),
    ErrorPage(405, "method_not_allowed", "this path does not take this method"),
    ErrorPage(407, "unauthorized", "this request needs proxy credentials"),
    ErrorPage(408, "request_timeout", "the request took too long to arrive or to be answered; send it whole and at once, then retry"),
    ErrorPage(410, "not_found", "nothing is served at this path any more"),
    ErrorPage(413, "body_too_large", "the request's body is too large"),
    ErrorPage(421, "misdirected_request", "this server does not serve this host name; connect to it again"),
    ErrorPage(422, "unprocessable", "the request's content cannot be processed"),
    ErrorPage(425, "too_early", "the request came before the TLS handshake completed; retry"),
    ErrorPage(429, "too_many_requests", "too many requests from your address; please wait a little and retry"),
    INTERNAL,
    ErrorPage(501, "not_implemented", "the server does not support this request (its method or transfer encoding)"),
    ErrorPage(502, "unavailable", "the server's web process failed to answer; please retry in a moment"),
    ErrorPage(503, "unavailable", "no web process can take this request right now; please retry in a moment"),
    ErrorPage(504, "unavailable", "the server's web process took too long to answer; please retry in a moment"),
)
#: Statuses the replica's stack answers in plain text that HAProxy never answers by itself.
REPLICA_PAGES = (
    ErrorPage(416, "range_not_satisfiable", "the requested byte range is not within the file"),
)
#: What a replica's non-JSON answer of a status in neither table becomes, by class.
CLASS_PAGES = (ErrorPage(400, "bad_request", "the server could not take this request as it is"), INTERNAL)
PAGES = {page.status: page for page in HAPROXY_PAGES + REPLICA_PAGES}
#: Statuses whose answer keeps the replica's ``Retry-After``.
RETRYABLE = frozenset({429, 503})
RETRY_AFTER_VARIABLE = "cp_retry_after"

_RETURN = re.compile(
    r"^(?P<head>\s*http-request\s+return\s+status\s+)(?P<status>\d+)\s+content-type\s+(?:\"[^\"]*\"|\S+)\s+"
    r"(?:lf-)?string\s+\"(?:[^\"\\]|\\.)*\"(?P<rest>.*)$"
)


def page_for(status: int) -> ErrorPage:
    """The answer for ``status``: its own, else its class's (4xx or 5xx)."""
    return PAGES.get(status) or CLASS_PAGES[0 if status < 500 else 1]


def quoted(text: str) -> str:
    """``text`` as one double-quoted HAProxy configuration word (a JSON string literal is one)."""
    return json.dumps(text)


def http_error_rules() -> list[str]:
    """``defaults`` lines that make every error HAProxy answers by itself JSON."""
    return [f"    {ERRORS_MARK}\n"] + [
        f"    http-error status {page.status} content-type {JSON} string {quoted(page.body())}\n" for page in HAPROXY_PAGES
    ]


def json_net() -> list[str]:
    """Ingress frontend rules replacing a replica's non-JSON answer of status >= 400 (which HAProxy
    passes on as it came) with this module's JSON one. Each rule returns a fixed status, so there is
    one per known status, then one per class for the rest; the first that matches answers."""
    not_json = f"!{{ res.hdr(content-type) -m beg -i {JSON} }}"
    retryable = " ".join(str(status) for status in sorted(RETRYABLE))
    # A return rule's headers cannot read the answer it replaces: the value is kept in a variable first.
    rules = [
        f"    {NET_MARK}\n",
        f"    http-response set-var(txn.{RETRY_AFTER_VARIABLE}) res.hdr(retry-after) if {{ status {retryable} }} {{ res.hdr(retry-after) -m found }}\n",
    ]
    for page in sorted(PAGES.values(), key=lambda page: page.status):
        answer = f"    http-response return status {page.status} content-type {JSON} string {quoted(page.body())}"
        when = f"if {{ status {page.status} }} {not_json}"
        if page.status in RETRYABLE:
            rules.append(f"{answer} hdr Retry-After %[var(txn.{RETRY_AFTER_VARIABLE})] {when} {{ var(txn.{RETRY_AFTER_VARIABLE}) -m found }}\n")
        rules.append(f"{answer} {when}\n")
    for page, low, high in ((CLASS_PAGES[0], 400, 499), (CLASS_PAGES[1], 500, 599)):
        rules.append(
            f"    http-response return status {page.status} content-type {JSON} string {quoted(page.body())} "
            f"if {{ status {low}:{high} }} {not_json}\n"
        )
    return rules


def json_return(line: str) -> str:
    """An ``http-request return`` of status >= 400 with a body of another type (Serve's plain-text
    health check and unknown-path answers) with the JSON body for its status (its class's for a
    status not in the tables); any other line as is. Its status, condition and headers are kept."""
    match = _RETURN.match(line.rstrip("\n"))
    if match is None or int(match["status"]) < 400:
        return line
    page = page_for(int(match["status"]))
    newline = "\n" if line.endswith("\n") else ""
    return f"{match['head']}{match['status']} content-type {JSON} string {quoted(page.body())}{match['rest']}{newline}"

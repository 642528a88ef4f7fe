"""Who is asking: the address a request came from, as far as the proxies in front can vouch for it.

Behind HAProxy every connection to an ingress replica comes from HAProxy's own address; HAProxy
appends the address it saw to ``X-Forwarded-For``. Entries before the ones trusted proxies
appended are whatever the client wrote there itself, so the client's address is the entry
``forwarded_hops`` places from the end (``Settings.forwarded_hops``: one per appending proxy).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection


def client_address(headers: Headers, peer: str | None, forwarded_hops: int) -> str:
    """The client's address: the ``forwarded_hops``-th ``X-Forwarded-For`` entry from the end, else the
    connection's ``peer`` (empty if unknown); at most 64 characters."""
    if forwarded_hops > 0:
        entries = [entry.strip() for value in headers.getlist("x-forwarded-for") for entry in value.split(",") if entry.strip()]
        if len(entries) >= forwarded_hops:
            return entries[-forwarded_hops][:64]
    return peer or ""


def requester(connection: HTTPConnection, forwarded_hops: int) -> str:
    """``client_address`` of a request or websocket."""
    return client_address(connection.headers, connection.client.host if connection.client else None, forwarded_hops)

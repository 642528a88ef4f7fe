"""HAProxy's part of the request-body limits: the ingress's frontend refuses a body no route takes,
and one that does not arrive in time, before the request reaches a replica.

The replica reads a body as it arrives and stops at its route's limit or deadline
(``crowdplay.web.bodies``), but its answer does not close the client's connection: HAProxy, in
front, keeps reading what remains of a body it has begun to forward, for as long as the client
keeps it coming or up to Serve's ``timeout client`` (an hour) when it does not. So HAProxy refuses
at the edge, where each refusal of a body not yet all read closes the connection:

- a body announced (``Content-Length``) longer than the largest any route takes
  (``crowdplay.web.limits.LARGEST_BODY``): 413 at once, before any of it is read;
- a body not complete ``body_timeout_s`` after its head: 408 (HAProxy waits for the whole body,
  up to its 16 KB buffer, before it sends the request on: ``wait-for-body``);
- a body that turns out longer than the largest (chunked, so known only as it arrives): 413.

A replica therefore gets every body whole; its own checks apply each route's limit, and its own
deadline serves wherever no HAProxy is in front. Only the standard library is imported: HAProxy's
launcher (``crowdplay.web.haproxy``) runs this.
"""

from __future__ import annotations

import json

#: The first line of the rules, by which a rewrite finds them.
BODIES_MARK = "# crowdplay: request bodies refused at the edge (crowdplay.web.limits, Settings.body_timeout_s)"


def body_rules(largest: int, timeout_s: float) -> list[str]:
    """The ingress frontend's rules for bodies: 413 (the app's JSON ``body_too_large``) for one
    announced or found longer than ``largest`` bytes, and a wait of ``timeout_s`` for the whole
    body (0: no wait), after which HAProxy answers 408."""
    answer = json.dumps({"error": "body_too_large", "reason": f"request body exceeds {largest} bytes"}, separators=(",", ":"))
    deny = f"http-request deny deny_status 413 content-type application/json string {json.dumps(answer)}"
    rules = [f"    {BODIES_MARK}\n", f"    {deny} if {{ req.hdr_val(content-length) gt {largest} }}\n"]
    if timeout_s > 0:
        rules.append(f"    http-request wait-for-body time {max(1, round(timeout_s * 1000))}ms\n")
    return [*rules, f"    {deny} if {{ req.body_size gt {largest} }}\n"]


def body_rules_from_environment() -> list[str]:
    """``body_rules`` for the largest body any route takes and the deployment's
    ``body_timeout_s``, read from this process's environment (the Ray instance's)."""
    from crowdplay.config import Settings
    from crowdplay.web.limits import LARGEST_BODY

    return body_rules(LARGEST_BODY, Settings.from_env().body_timeout_s)

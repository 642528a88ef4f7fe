"""HAProxy's rules for request bodies (``crowdplay.web.haproxy_bodies``): what they refuse, where the
launcher's rewrite puts them, and that HAProxy takes them (``haproxy -c``)."""

from __future__ import annotations

import subprocess

from crowdplay.web.haproxy import harden, real_binary, start_guard
from crowdplay.web.haproxy_bodies import BODIES_MARK, body_rules
from crowdplay.web.limits import LARGEST_BODY

CONFIG = """global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend http_frontend
    bind 127.0.0.1:18000
    default_backend app
backend app
    server replica 127.0.0.1:18001
"""


def test_a_body_no_route_takes_is_refused_whether_announced_or_sent_and_a_late_one_waited_for_no_longer_than_the_timeout() -> None:
    rules = body_rules(4096, 2.5)
    assert rules[0].strip() == BODIES_MARK
    assert "deny_status 413" in rules[1] and rules[1].rstrip().endswith("if { req.hdr_val(content-length) gt 4096 }")
    assert rules[2].strip() == "http-request wait-for-body time 2500ms"
    assert "deny_status 413" in rules[3] and rules[3].rstrip().endswith("if { req.body_size gt 4096 }")
    assert '\\"error\\":\\"body_too_large\\"' in rules[1]  # the app's JSON shape
    assert not any("wait-for-body" in rule for rule in body_rules(4096, 0))


def test_the_rewrite_puts_the_rules_after_the_guard_once_and_haproxy_takes_them(tmp_path) -> None:
    bodies = body_rules(LARGEST_BODY, 5)
    hardened = harden(CONFIG, start_guard(40, 1), None, None, bodies)
    assert harden(hardened, start_guard(40, 1), None, None, bodies) == hardened
    lines = hardened.splitlines(keepends=True)
    assert lines.count(bodies[1]) == 1
    assert lines.index(bodies[0]) > max(index for index, line in enumerate(lines) if "tarpit" in line)
    path = tmp_path / "haproxy.cfg"
    path.write_text(hardened)
    checked = subprocess.run([real_binary(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr

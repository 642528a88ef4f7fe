"""The lab's plan: names, addresses and the ip commands, checked without root."""

from __future__ import annotations

import pytest

from crowdplay.netlab.__main__ import build_parser
from crowdplay.netlab.topology import Topology


def test_every_host_has_a_distinct_address_on_its_network():
    lab = Topology(workers=3, sites=2)
    addresses = {name: lab.address(name) for name in lab.namespaces if name != lab.lan}
    assert len(set(addresses.values())) == len(addresses)
    assert lab.address("head") == "10.231.0.1" and lab.address("w3") == "10.231.0.13" and lab.address("router") == "10.231.0.254"
    assert lab.address("site1") == "10.231.101.2"


def test_the_cluster_hosts_and_the_router_are_cabled_to_the_bridge_and_route_to_the_sites_through_the_router():
    lab = Topology(workers=2)
    commands = [" ".join(command) for command in lab.build_commands()]
    for host in ("cpl-head", "cpl-w1", "cpl-w2", "cpl-router"):
        assert any(f"eth0 netns {host} type veth" in command and "netns cpl-lan" in command for command in commands)
    assert "ip -n cpl-w2 route add 10.231.0.0/16 via 10.231.0.254" in commands
    assert any("net.ipv4.ip_forward=1" in command for command in commands)
    assert {len(lab.bridge_port(host)) <= 15 for host in ("head", "w1", "router")} == {True}


def test_a_sites_link_is_configured_on_the_devices_the_emulator_makes():
    lab = Topology(sites=2)
    site_device, router_device = lab.site_devices(1)
    commands = [" ".join(command) for command in lab.site_commands(1)]
    assert f"ip -n cpl-site1 addr add 10.231.101.2/24 dev {site_device}" in commands
    assert f"ip -n cpl-router addr add 10.231.101.1/24 dev {router_device}" in commands
    assert f"ip -n cpl-site1 route add default dev {site_device}" in commands


def test_bad_plans_and_unknown_hosts_are_refused_with_what_exists():
    with pytest.raises(ValueError, match="workers"):
        Topology(workers=-1)
    with pytest.raises(ValueError, match="hosts: lan, router, head, w1, w2, site0"):
        Topology().address("w7")


def test_the_commands_parse_as_the_docs_print_them():
    up = build_parser().parse_args(["up", "--rtt-ms", "50", "--jitter-ms", "5", "--loss", "0.01"])
    assert (up.command, up.rtt_ms, up.jitter_ms, up.loss, up.workers, up.sites) == ("up", 50.0, 5.0, 0.01, 2, 1)
    shape = build_parser().parse_args(["shape", "site1", "--rate-kbit", "500", "--loss", "0.05"])
    assert (shape.site, shape.rate_kbit, shape.loss, shape.cut) == ("site1", 500.0, 0.05, False)
    assert build_parser().parse_args(["cut", "w1"]).host == "w1"

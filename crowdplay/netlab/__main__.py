"""``python -m crowdplay.netlab``: start, shape, cut and stop a lab (docs/netlab.md). Needs root."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from crowdplay.config import NO_START_GUARD_ENVIRONMENT, NO_START_LIMITS, setting_variable
from crowdplay.netlab.lab import DEFAULT_WORKDIR, Lab
from crowdplay.netlab.probe import probe
from crowdplay.netlab.shape import LinkShape
from crowdplay.netlab.topology import Topology


def _shape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round trip added by the link, split over both directions")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="each direction's delay varies by a normal deviation of half this")
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of packets lost in each direction, e.g. 0.01")
    parser.add_argument("--rate-kbit", type=float, default=0.0, help="the link's rate in kbit/s each way (0: unlimited)")
    parser.add_argument("--queue-bytes", type=int, default=64_000, help="the link's buffer; packets beyond it are dropped")


def _shape(args: argparse.Namespace, cut: bool = False) -> LinkShape:
    return LinkShape(args.rtt_ms, args.jitter_ms, args.loss, args.rate_kbit, args.queue_bytes, cut)


def build_parser() -> argparse.ArgumentParser:
    """The commands and their options."""
    parser = argparse.ArgumentParser(prog="python -m crowdplay.netlab", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="the lab's files: state, logs, recordings")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build the hosts, shape the sites' links and deploy CrowdPlay on Ray")
    up.add_argument("--workers", type=int, default=2, help="Ray worker hosts (env_worker nodes)")
    up.add_argument("--sites", type=int, default=1, help="participants' sites, each behind its own shaped link")
    up.add_argument("--no-deploy", action="store_true", help="only the network: no Ray, no CrowdPlay")
    up.add_argument("--no-start-limits", action="store_true",
                    help="lift the per-address start limits: every participant of a site shares the site's address")
    up.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a CROWDPLAY_* setting for every node")
    _shape_arguments(up)
    shape = commands.add_parser("shape", help="give a site's link a new shape")
    shape.add_argument("site", help="site0, site1, ...")
    _shape_arguments(shape)
    shape.add_argument("--cut", action="store_true", help="drop every packet: the site stops answering")
    for name, text in (("cut", "unplug a host's cable (head, w1, w2, router): it stops answering, its processes run on"),
                       ("heal", "plug a host's cable back in")):
        command = commands.add_parser(name, help=text)
        command.add_argument("host")
    commands.add_parser("stats", help="each site link's shape and packet counters, as JSON")
    probe = commands.add_parser("probe", help="play a few seconds at URL as one participant; JSON: round trip, key-to-frame, fps")
    probe.add_argument("url")
    probe.add_argument("--env", default="SpaceInvaders")
    probe.add_argument("--seconds", type=float, default=5.0)
    commands.add_parser("down", help="stop everything the lab started and remove its namespaces")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors are printed in one line with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            settings = dict(NO_START_GUARD_ENVIRONMENT) if args.no_start_limits else {}
            if args.no_start_limits:
                settings.update({setting_variable(name): str(value) for name, value in NO_START_LIMITS.items()})
            settings.update(item.split("=", 1) for item in args.set)
            lab = Lab(Topology(args.workers, args.sites), args.workdir, settings=settings)
            lab.up(_shape(args), deploy=not args.no_deploy)
            print(f"netlab up: CrowdPlay at {lab.url}, reached from the sites:")
            for index in range(lab.topology.sites):
                print(f"  ip netns exec {lab.topology.site(index)} <command>   ({lab.topology.address(lab.topology.site(index))})")
            return 0
        if args.command == "probe":  # from wherever it runs: ip netns exec <site> ... for a site's view
            print(json.dumps(asyncio.run(probe(args.url, args.env, args.seconds))))
            return 0
        lab = Lab.load(args.workdir)
        if args.command == "shape":
            lab.shape(args.site, _shape(args, args.cut))
        elif args.command == "cut":
            lab.cut(args.host)
        elif args.command == "heal":
            lab.heal(args.host)
        elif args.command == "stats":
            print(json.dumps(lab.link_stats(), indent=1))
        elif args.command == "down":
            lab.down()
            print("netlab down")
        return 0
    except (ValueError, RuntimeError, OSError, TimeoutError, ConnectionError) as error:
        message = str(error)
        print(message if message.startswith("netlab:") else f"netlab: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

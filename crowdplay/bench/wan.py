"""The load benchmark's participants at a site of a netlab (docs/netlab.md): the server is
CrowdPlay deployed on a head and two workers as cluster.yaml deploys it, and every participant's
packets cross the site's shaped link. Needs root.

The benchmark reads the server's processes (CPU, memory) from the lab's namespaces. It has no
Ray driver of its own (the cluster's hosts are not this process's network), so the per-stage
key path and the server's apply delay, which come from the EnvActors' input logs, are not
measured here; the key's time beyond the link's round trip is."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from crowdplay.bench.load import System
from crowdplay.config import NO_START_GUARD_ENVIRONMENT, NO_START_LIMITS, setting_variable
from crowdplay.netlab.lab import Lab, pids_in
from crowdplay.netlab.shape import LinkShape
from crowdplay.netlab.topology import Topology


def lab_processes(lab: Lab) -> list[psutil.Process]:
    """Every process on the lab's Ray hosts: the server's whole process tree."""
    processes = []
    for host in lab.topology.cluster_hosts:
        for pid in pids_in(host):
            try:
                processes.append(psutil.Process(pid))
            except psutil.Error:
                continue
    return processes


def settled() -> bool:
    """Whether the sessions of a trial are gone: without a driver on the cluster this process cannot
    ask the manager, so it waits out the reconnect grace (0.2 s here) and the games' ends."""
    time.sleep(3)
    return True


@contextmanager
def netlab_system(shape: LinkShape, record: bool = True) -> Iterator[System]:
    """A lab up with its site's link shaped as ``shape``, taken down on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="crowdplay-wan-"))
    settings = {**NO_START_GUARD_ENVIRONMENT, **{setting_variable(name): str(value) for name, value in NO_START_LIMITS.items()}}
    settings[setting_variable("reconnect_grace_s")] = "0.2"  # a participant who left frees the seat at once
    settings[setting_variable("record")] = "1" if record else "0"
    lab = Lab(Topology(workers=2, sites=1), workdir, settings=settings)
    lab.up(shape)
    try:
        yield System(lab.url, lambda: lab_processes(lab), idle=settled, site=lab.topology.site(0))
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)

"""A lab: the topology built, the link emulator running, CrowdPlay deployed on the hosts; and
everything taken down again, also after a failure half way (``down`` works from any state).
What the lab is made of is written to ``<workdir>/lab.json`` so that another process (the
``python -m crowdplay.netlab`` commands, a test) can shape, cut and tear it down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crowdplay.netlab import cluster, emulator
from crowdplay.netlab.namespace import inside
from crowdplay.netlab.shape import LinkShape
from crowdplay.netlab.topology import Topology

DEFAULT_WORKDIR = Path("/tmp/crowdplay-netlab")


@dataclass
class Lab:
    """One lab on this machine: its topology, where its files go and its emulator's process."""
    topology: Topology = field(default_factory=Topology)
    workdir: Path = DEFAULT_WORKDIR
    emulator_pid: int = 0
    #: Settings for every node on top of deploy/crowdplay.env.example's (CROWDPLAY_* variables).
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def control(self) -> str:
        """The emulator's control socket."""
        return str(self.workdir / "emulator.sock")

    @property
    def url(self) -> str:
        """Where participants reach the head's ingress."""
        return f"http://{self.topology.address('head')}:{cluster.HTTP_PORT}"

    # -- state -------------------------------------------------------------------------------
    def save(self) -> None:
        """Write what the lab is made of to ``<workdir>/lab.json``."""
        state = {"topology": asdict(self.topology), "emulator_pid": self.emulator_pid, "settings": self.settings}
        (self.workdir / "lab.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, workdir: Path = DEFAULT_WORKDIR) -> Lab:
        """The lab whose ``lab.json`` is in ``workdir``."""
        path = workdir / "lab.json"
        if not path.exists():
            raise FileNotFoundError(f"netlab: no lab in {workdir} (start one: python -m crowdplay.netlab up)")
        state = json.loads(path.read_text())
        return cls(Topology(**state["topology"]), workdir, state["emulator_pid"], state["settings"])

    # -- up ----------------------------------------------------------------------------------
    def up(self, shape: LinkShape, deploy: bool = True) -> None:
        """Build the topology, start the emulator with every site's link shaped as ``shape`` and, with
        ``deploy``, start Ray on the cluster hosts and deploy CrowdPlay. Anything half built is taken
        down again when a step fails."""
        if os.geteuid() != 0:
            raise PermissionError("netlab: network namespaces need root (run it with sudo)")
        existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        if existing & set(self.topology.namespaces):
            raise RuntimeError("netlab: a lab is already up (python -m crowdplay.netlab down)")
        shutil.rmtree(self.workdir, ignore_errors=True)
        (self.workdir / "logs").mkdir(parents=True)
        self.save()
        try:
            for command in self.topology.build_commands():
                subprocess.run(command, check=True, capture_output=True)
            self._start_emulator()
            for index in range(self.topology.sites):
                self._add_site(index, shape)
            if deploy:
                self._deploy()
        except BaseException:
            self.down()
            raise

    def _start_emulator(self) -> None:
        log = (self.workdir / "logs" / "emulator.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "crowdplay.netlab.emulator", "--control", self.control],
                                   stdout=subprocess.PIPE, stderr=log, cwd=cluster.ROOT, start_new_session=True)
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"netlab: the link emulator did not start (see {self.workdir / 'logs' / 'emulator.log'})")
        self.emulator_pid = process.pid
        self.save()

    def _add_site(self, index: int, shape: LinkShape) -> None:
        site_device, router_device = self.topology.site_devices(index)
        emulator.request(self.control, {"op": "add", "link": self.topology.site(index), "shape": shape.to_dict(),
                                        "site": [self.topology.site(index), site_device],
                                        "router": [self.topology.router, router_device]})
        for command in self.topology.site_commands(index):
            subprocess.run(command, check=True, capture_output=True)

    def _deploy(self) -> None:
        topology = self.topology
        head_address = topology.address("head")
        cluster.start_head(topology.head, head_address, self.workdir, self.settings)
        for index in range(1, topology.workers + 1):
            host = topology.worker(index)
            cluster.start_worker(host, topology.address(host), head_address, self.workdir, f"w{index}", self.settings)
        cluster.serve_deploy(topology.head, self.workdir, self.settings)
        self.wait_until_served()

    def wait_until_served(self, timeout_s: float = 180, host: str = "head") -> None:
        """Until ``host``'s proxy answers /api/health from the first site, across the link."""
        deadline = time.monotonic() + timeout_s
        url = self.url.replace(self.topology.address("head"), self.topology.address(host))
        while True:
            try:
                with inside(self.topology.site(0)):
                    with urllib.request.urlopen(f"{url}/api/health", timeout=5) as answer:
                        if answer.status == 200:
                            return
            except OSError:  # HAProxy answers 503 until the application is up
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"netlab: {url} did not become healthy in {timeout_s:.0f} s (logs: {self.workdir / 'logs'})")
            time.sleep(1)

    # -- while up ----------------------------------------------------------------------------
    def shape(self, site: str, shape: LinkShape) -> None:
        """Give ``site``'s link a new shape, at once."""
        emulator.request(self.control, {"op": "shape", "link": self.topology.host_name(site), "shape": shape.to_dict()})

    def link_stats(self) -> dict[str, Any]:
        """Per site link: its shape and the packets passed, lost and dropped at a full queue."""
        return dict(emulator.request(self.control, {"op": "stats"})["links"])

    def cut(self, host: str) -> None:
        """Unplug ``host``'s cable at the bridge: its packets, and those to it, vanish without an
        answer, as when a cloud node stops answering; its processes keep running."""
        self._cable(host, "down")

    def heal(self, host: str) -> None:
        """Plug ``host``'s cable back in."""
        self._cable(host, "up")

    def _cable(self, host: str, state: str) -> None:
        if self.topology.host_name(host).startswith(self.topology.site(0)[:-1]):
            raise ValueError("netlab: a site's link is cut with its shape (cut=True), not its cable")
        subprocess.run(["ip", "-n", self.topology.lan, "link", "set", self.topology.bridge_port(host), state], check=True, capture_output=True)

    # -- down --------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every process in the lab's namespaces and the emulator, then remove the namespaces."""
        existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        namespaces = [name for name in self.topology.namespaces if name in existing]
        for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            pids = [pid for name in namespaces for pid in pids_in(name)]
            if self.emulator_pid:
                pids.append(self.emulator_pid)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
                time.sleep(0.1)
        for name in namespaces:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def pids_in(namespace: str) -> list[int]:
    """The processes running in ``namespace`` (this one left out): a lab host's processes."""
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in listed if pid.isdigit() and int(pid) != os.getpid()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

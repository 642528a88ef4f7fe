"""Which namespaces, interfaces and addresses a lab has, and the ``ip`` commands that build it.

    participants' site(s) --shaped link (emulator)-- router --+
                                                              |  bridge in the "lan" namespace
                                      head, worker 1, worker 2 --+

Pure data: ``Topology`` names everything and lists the commands, so the plan is checked without
root; ``crowdplay.netlab.lab`` runs them."""

from __future__ import annotations

from dataclasses import dataclass

LAN = "10.231.0"
#: Site i is the subnet 10.231.(SITE_SUBNET_BASE + i).0/24: the router is .1, participants .2.
SITE_SUBNET_BASE = 100
ROUTER_HOST = 254
HEAD_HOST = 1
WORKER_HOST_BASE = 10


@dataclass(frozen=True)
class Topology:
    """The hosts of a lab: a head, ``workers`` Ray workers, a router and ``sites`` participants' sites."""
    workers: int = 2
    sites: int = 1
    prefix: str = "cpl"

    def __post_init__(self) -> None:
        if not 0 <= self.workers <= 40:
            raise ValueError(f"netlab: workers must be 0 to 40, got {self.workers}")
        if not 1 <= self.sites <= 100:
            raise ValueError(f"netlab: sites must be 1 to 100, got {self.sites}")
        if not self.prefix.isalnum() or len(self.prefix) > 5:
            raise ValueError(f"netlab: prefix must be up to 5 letters or digits, got {self.prefix!r}")

    # -- names -------------------------------------------------------------------------------
    @property
    def lan(self) -> str:
        """The namespace holding the bridge all cluster hosts and the router are cabled to."""
        return f"{self.prefix}-lan"

    @property
    def router(self) -> str:
        """The namespace routing between the sites' shaped links and the LAN."""
        return f"{self.prefix}-router"

    @property
    def head(self) -> str:
        """The Ray head's namespace."""
        return f"{self.prefix}-head"

    def worker(self, index: int) -> str:
        """Worker ``index`` counts from 1."""
        return f"{self.prefix}-w{index}"

    def site(self, index: int) -> str:
        """Site ``index``'s namespace (counting from 0): where participants connect from."""
        return f"{self.prefix}-site{index}"

    @property
    def cluster_hosts(self) -> list[str]:
        """The Ray nodes' namespaces, head first."""
        return [self.head, *(self.worker(i) for i in range(1, self.workers + 1))]

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the lab."""
        return [self.lan, self.router, *self.cluster_hosts, *(self.site(i) for i in range(self.sites))]

    def host_name(self, name: str) -> str:
        """A host's namespace from its short name (``head``, ``w1``, ``router``, ``site0``) or itself."""
        full = name if name.startswith(f"{self.prefix}-") else f"{self.prefix}-{name}"
        if full not in self.namespaces:
            raise ValueError(f"netlab: no host {name!r}; hosts: {', '.join(n.split('-', 1)[1] for n in self.namespaces)}")
        return full

    def bridge_port(self, host: str) -> str:
        """The bridge's end of ``host``'s cable, in the lan namespace (cut it to partition the host)."""
        return f"p-{self.host_name(host).split('-', 1)[1]}"[:15]

    def site_devices(self, index: int) -> tuple[str, str]:
        """The emulator's TUN devices of site ``index``: (in the site, in the router)."""
        return f"{self.prefix}s{index}", f"{self.prefix}r{index}"

    # -- addresses ---------------------------------------------------------------------------
    def address(self, host: str) -> str:
        """``host``'s IPv4 address."""
        host = self.host_name(host)
        if host == self.head:
            return f"{LAN}.{HEAD_HOST}"
        if host == self.router:
            return f"{LAN}.{ROUTER_HOST}"
        for i in range(1, self.workers + 1):
            if host == self.worker(i):
                return f"{LAN}.{WORKER_HOST_BASE + i}"
        for i in range(self.sites):
            if host == self.site(i):
                return f"10.231.{SITE_SUBNET_BASE + i}.2"
        raise ValueError(f"netlab: {host} has no address")

    # -- commands ----------------------------------------------------------------------------
    def build_commands(self) -> list[list[str]]:
        """Namespaces, the bridge, each cluster host's and the router's cable to it, routes.
        The sites' links are TUN devices the emulator creates; ``site_commands`` configures them."""
        commands = [["ip", "netns", "add", name] for name in self.namespaces]
        commands += [["ip", "-n", name, "link", "set", "lo", "up"] for name in self.namespaces]
        commands += [
            ["ip", "-n", self.lan, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", self.lan, "link", "set", "br0", "up"],
        ]
        for host in [*self.cluster_hosts, self.router]:
            port = self.bridge_port(host)
            commands += [
                ["ip", "link", "add", "eth0", "netns", host, "type", "veth", "peer", "name", port, "netns", self.lan],
                ["ip", "-n", self.lan, "link", "set", port, "master", "br0"],
                ["ip", "-n", self.lan, "link", "set", port, "up"],
                ["ip", "-n", host, "addr", "add", f"{self.address(host)}/24", "dev", "eth0"],
                ["ip", "-n", host, "link", "set", "eth0", "up"],
            ]
        for host in self.cluster_hosts:  # the sites are behind the router
            commands.append(["ip", "-n", host, "route", "add", "10.231.0.0/16", "via", self.address("router")])  # the LAN's /24 is nearer
        commands.append(["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        return commands

    def site_commands(self, index: int) -> list[list[str]]:
        """Addresses and routes of site ``index``'s link, once the emulator has made its devices."""
        site, router = self.site(index), self.router
        site_device, router_device = self.site_devices(index)
        subnet = f"10.231.{SITE_SUBNET_BASE + index}"
        return [
            ["ip", "-n", site, "addr", "add", f"{subnet}.2/24", "dev", site_device],
            ["ip", "-n", site, "link", "set", site_device, "up"],
            ["ip", "-n", site, "route", "add", "default", "dev", site_device],
            ["ip", "-n", router, "addr", "add", f"{subnet}.1/24", "dev", router_device],
            ["ip", "-n", router, "link", "set", router_device, "up"],
        ]

    def teardown_commands(self) -> list[list[str]]:
        """Removing the namespaces removes their interfaces and the bridge with them."""
        return [["ip", "netns", "del", name] for name in self.namespaces]

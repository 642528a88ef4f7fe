"""netlab: a Ray cluster of real hosts on one machine, for tests and benchmarks over real links.

Each host (a Ray head, Ray workers, a router, participants' sites) is a Linux network namespace
with its own interfaces and addresses; the cluster's hosts share a bridge, and participants reach
the head's ingress through a router whose links to them are shaped (delay, jitter, loss, rate) by
a small packet emulator over TUN devices. docs/netlab.md shows how to start it by hand."""

"""Which part of the server a process is, from its title: the benchmarks report CPU and memory by it."""

from __future__ import annotations

import os

import psutil

#: Process title prefix -> kind; every other process of the server's tree is Ray's own ("ray").
KINDS = {
    "ray::ServeReplica": "ingress",
    "ray::EnvsManager": "manager",
    "ray::TrajectoryWriter": "writer",
    "ray::PolicyActor": "policy",
    "ray::EnvActor": "env_actor",
    "haproxy": "haproxy",
}


def kind_of_title(title: str) -> str:
    """The kind of a process titled ``title`` (its first command-line word, or its name); a
    program's path counts by its file name (Serve's HAProxy runs from its package's directory)."""
    name = os.path.basename(title) if title.startswith("/") else title
    return next((kind for prefix, kind in KINDS.items() if name.startswith(prefix)), "ray")


#: The load benchmark's baseline: the whole app in one plain uvicorn process.
BASELINE_MODULE = "crowdplay.web.local"


def kind_of_command(command: list[str], name: str) -> str:
    """The kind of a process run as ``command`` (its command line) named ``name``."""
    if BASELINE_MODULE in command:
        return "web_local"
    return kind_of_title(" ".join(command[:1]) or name)


def kind_of(process: psutil.Process) -> str:
    """The kind of ``process``; psutil.Error when it is gone."""
    return kind_of_command(process.cmdline(), process.name())

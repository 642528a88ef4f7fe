"""CrowdPlay on the lab's hosts as ``cluster.yaml`` deploys it: each node's environment is
cluster.yaml's exports plus the settings file (deploy/crowdplay.env.example, with the lab's store,
spool and admin token), ``ray start`` with cluster.yaml's node types, then ``serve deploy
serve_config.yaml`` on the head."""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
GCS_PORT = 6379  # cluster.yaml's
DASHBOARD_PORT = 8265
HTTP_PORT = 8000  # serve_config.yaml's
#: The lab's dashboard token: tests and a maintainer read /admin with it.
ADMIN_TOKEN = "netlab-admin-token"


def cluster_yaml() -> dict[str, Any]:
    """The checkout's cluster.yaml, parsed."""
    return dict(yaml.safe_load((ROOT / "cluster.yaml").read_text()))


def cluster_exports() -> dict[str, str]:
    """The variables cluster.yaml's head start command exports, with its paths made this checkout's."""
    exports: dict[str, str] = {}
    for command in cluster_yaml()["head_start_ray_commands"]:
        for statement in re.findall(r"export ([^;]+);", command):
            for assignment in shlex.split(statement):
                name, _, value = assignment.partition("=")
                if name != "PYTHONPATH":
                    exports[name] = value.replace("$HOME/crowdplay", str(ROOT)).replace("$HOME/venv/bin/python", sys.executable)
    return exports


def settings_file(workdir: Path, host: str) -> dict[str, str]:
    """deploy/crowdplay.env.example's settings, with this lab's store (the embedded one, on the
    head's disk), a spool per host (each node has its own disk on a cluster) and admin token."""
    settings: dict[str, str] = {}
    for line in (ROOT / "deploy" / "crowdplay.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    settings.update({
        "CROWDPLAY_STORE_URI": str(workdir / "recordings.db"),
        "CROWDPLAY_SPOOL_DIR": str(workdir / host / "spool"),
        "CROWDPLAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "CROWDPLAY_LOCAL_MONGODB": "0",
    })
    settings.pop("CROWDPLAY_MONGODB_PASSWORD", None)
    return settings


def node_environment(workdir: Path, host: str, extra: dict[str, str]) -> dict[str, str]:
    """A node's environment for ``ray start``: what cluster.yaml and the settings file give a real node."""
    return {
        **os.environ,
        **cluster_exports(),
        **settings_file(workdir, host),
        **extra,
        # A machine with ~/.ray/auth_token would turn token auth on; the lab's cluster runs without.
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _raise_open_files() -> None:
    """cluster.yaml's ``ulimit -n 65536``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else min(65_536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))


def run_in(namespace: str, command: list[str], env: dict[str, str], log: Path, timeout_s: float = 180) -> None:
    """Run ``command`` inside ``namespace``; its output goes to ``log``, quoted in the error if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(command)}\n".encode())
        out.flush()
        done = subprocess.run(["ip", "netns", "exec", namespace, *command], env=env, stdout=out, stderr=subprocess.STDOUT,
                              preexec_fn=_raise_open_files, timeout=timeout_s, cwd=ROOT)
    if done.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"netlab: `{shlex.join(command)}` in {namespace} exited {done.returncode}:\n{tail}")


def start_head(namespace: str, address: str, workdir: Path, extra: dict[str, str]) -> None:
    """``ray start --head`` on ``namespace`` with the head node type's resources from cluster.yaml."""
    spec = cluster_yaml()["available_node_types"][cluster_yaml()["head_node_type"]]["resources"]
    resources = {name: value for name, value in spec.items() if name != "CPU"}
    command = [str(BIN / "ray"), "start", "--head", f"--node-ip-address={address}", f"--port={GCS_PORT}",
               "--object-manager-port=8076", "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}",
               f"--num-cpus={spec['CPU']}", f"--resources={json.dumps(resources)}",
               f"--temp-dir={workdir / 'ray'}", "--disable-usage-stats"]
    run_in(namespace, command, node_environment(workdir, "head", extra), workdir / "logs" / "head.log")


def start_worker(namespace: str, address: str, head_address: str, workdir: Path, host: str, extra: dict[str, str]) -> None:
    """``ray start`` of an env_worker node (cluster.yaml's resources) joining the head."""
    spec = cluster_yaml()["available_node_types"]["env_worker"]["resources"]
    resources = {name: value for name, value in spec.items() if name != "CPU"}
    command = [str(BIN / "ray"), "start", f"--address={head_address}:{GCS_PORT}", f"--node-ip-address={address}",
               "--object-manager-port=8076", f"--num-cpus={spec['CPU']}",
               f"--resources={json.dumps(resources)}", "--disable-usage-stats"]
    run_in(namespace, command, node_environment(workdir, host, extra), workdir / "logs" / f"{host}.log")


def serve_deploy(namespace: str, workdir: Path, extra: dict[str, str], config: Path = ROOT / "serve_config.yaml") -> None:
    """``serve deploy serve_config.yaml`` from the checkout, as cluster.yaml's last head command
    (or another configuration, run from the checkout all the same)."""
    command = [str(BIN / "serve"), "deploy", str(config), "--address", f"http://127.0.0.1:{DASHBOARD_PORT}"]
    run_in(namespace, command, node_environment(workdir, "head", extra), workdir / "logs" / "serve-deploy.log")

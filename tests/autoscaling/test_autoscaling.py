"""The path from laptop to cluster, offline: ``cluster.yaml`` passes Ray's own validation, and on
Ray's fake multi-node provider, with the node types of ``cluster.yaml`` and the application
deployed from ``serve_config.yaml`` by ``serve deploy``, more sessions than the head can host make
the autoscaler add env_worker nodes, the sessions are placed and play there, and the idle
workers are removed afterwards. Runs in a pytest process of its own (``make test`` names it):
``ray stop --force`` stops every Ray process on the machine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from crowdplay.client import Participant, ServerError, http_json
from crowdplay.config import RAY_ENVIRONMENT, Settings, free_port
from crowdplay.manager import get_or_create_manager
from crowdplay.shutdown import haproxies_running_in, kill_leftovers

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
#: Each EnvActor takes 6 of a worker's 12 env_slots here, so a few sessions need several workers.
SLOTS_PER_ACTOR = 6


def test_cluster_yaml_passes_rays_offline_validation():
    config = prepare_config(json.loads(json.dumps(CLUSTER)))
    validate_config(config)
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and "env_slots" not in types["head"]["resources"]
    assert types["env_worker"]["resources"]["env_slots"] > 0 and types["env_worker"]["max_workers"] >= types["env_worker"]["min_workers"]
    assert any("serve deploy serve_config.yaml" in command for command in config["head_start_ray_commands"])
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        for name, value in RAY_ENVIRONMENT.items():  # Ray's processes inherit it when Ray starts
            assert any(f"{name}={value}" in command for command in commands), name
    example = (ROOT / "deploy" / "crowdplay.env.example").read_text()
    assert "CROWDPLAY_ENV_ACTOR_RESOURCES=env_slots=1" in example  # EnvActors ask for the workers' resource


#: The fake provider knows its head by this node type name (the head's resources stay cluster.yaml's).
FAKE_HEAD_TYPE = "ray.head.default"
#: Where Serve writes its HAProxy's configuration by default (``RAY_SERVE_HAPROXY_SERVER_STATE_BASE``).
SERVE_HAPROXY_DIRECTORY = "/tmp/haproxy-serve"


def fake_autoscaling_config(gcs_port: int) -> dict:
    """cluster.yaml's node types and resources on Ray's fake multi-node provider (local raylets)."""
    types = {name: {"resources": dict(spec["resources"]), "node_config": {}, "max_workers": spec.get("max_workers", 0)} for name, spec in CLUSTER["available_node_types"].items()}
    types["env_worker"].update(min_workers=0, max_workers=2)  # start with none: the test shows scaling up and down
    types[FAKE_HEAD_TYPE] = {**types.pop(CLUSTER["head_node_type"]), "max_workers": 0}
    empty = ("file_mounts", "initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return {
        "cluster_name": "crowdplay-fake",
        "max_workers": 2,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {
            "type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",  # where the fake workers find the head (default: port 6379)
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "available_node_types": types,
        "head_node_type": FAKE_HEAD_TYPE,
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        **{key: {} if key == "file_mounts" else [] for key in empty},
    }


@pytest.fixture(scope="module")
def deployment() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="crowdplay-autoscaling-"))
    http_port, dashboard_port, gcs_port = free_port(), free_port(), free_port()
    config = work / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(fake_autoscaling_config(gcs_port)))
    serve_config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    serve_config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    (work / "serve_config.yaml").write_text(yaml.safe_dump(serve_config))
    env = {
        **os.environ,
        **RAY_ENVIRONMENT,
        "RAY_FAKE_CLUSTER": "1",
        # A machine with ~/.ray/auth_token would turn token auth on for `ray start`; this local
        # cluster does without it, so that `serve deploy` reaches its dashboard as on a fresh node.
        "RAY_AUTH_MODE": "disabled",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # What deploy/crowdplay.env sets on a real cluster, sized for this test.
        "CROWDPLAY_ENV_ACTOR_RESOURCES": f"env_slots={SLOTS_PER_ACTOR}",
        "CROWDPLAY_CONCURRENT_GAMES_PER_ACTOR": "1",
        "CROWDPLAY_WARM_POOL_SIZE": "0",
        "CROWDPLAY_STORE_URI": str(work / "recordings.db"),
        "CROWDPLAY_SPOOL_DIR": str(work / "spool"),
    }
    for name in ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"):
        env[name] = str(free_port())
    subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True)
    haproxies_before = {process.pid for process in haproxies_running_in(SERVE_HAPROXY_DIRECTORY)}
    head_cpus = str(CLUSTER["available_node_types"]["head"]["resources"]["CPU"])
    subprocess.run(
        [BIN / "ray", "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}", f"--num-cpus={head_cpus}",
         f"--autoscaling-config={config}", "--disable-usage-stats"],
        env=env, check=True, capture_output=True,
    )
    try:
        deployed = subprocess.run(
            [BIN / "serve", "deploy", str(work / "serve_config.yaml"), "--address", f"http://127.0.0.1:{dashboard_port}"],
            env=env, capture_output=True, text=True, cwd=ROOT,
        )
        assert deployed.returncode == 0, deployed.stderr[-2000:]
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                http_json(f"{url}/api/health", timeout=5)
                break
            except (OSError, ValueError, ServerError):  # HAProxy answers 503 until the app is up
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(address=f"127.0.0.1:{gcs_port}", log_to_driver=False)
        yield {"url": url}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True)
        # Serve's HAProxy is no Ray process: ``ray stop`` leaves it running, holding its port.
        kill_leftovers([process for process in haproxies_running_in(SERVE_HAPROXY_DIRECTORY) if process.pid not in haproxies_before], 0.0)


def alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node["Alive"]]


def test_sessions_beyond_the_heads_room_bring_workers_that_leave_again_when_idle(deployment, browser):
    head = [node["NodeID"] for node in alive_nodes()]
    assert len(head) == 1  # no workers before anyone plays

    # A participant's page while the first worker starts: it says so, then the game plays.
    page = browser.new_page()
    page.goto(deployment["url"])
    page.click("button[data-env-id=SpaceInvaders]")
    page.click("#start")
    page.wait_for_function("window.crowdplay.waitingForServer === true", timeout=20_000)
    assert "starting another game server" in page.inner_text("#status")
    page.wait_for_function("window.crowdplay.framesDisplayed > 30", timeout=90_000)

    async def scenario() -> tuple[float, list[dict], list[dict]]:
        started = time.monotonic()
        players = await asyncio.gather(*(Participant.join(deployment["url"], "SpaceInvaders") for _ in range(3)))
        for player in players:
            for _ in range(60):
                await player.next_frame(timeout=60)
        placed_after = time.monotonic() - started
        manager = get_or_create_manager(Settings())
        games = await asyncio.to_thread(ray.get, manager.list_games.remote())
        nodes = await asyncio.to_thread(alive_nodes)
        for player in players:
            await player.close()
        return placed_after, games, nodes

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API keeps an event loop in this one
        placed_after, games, nodes = thread.submit(asyncio.run, scenario()).result()
    page.click("#leave")
    page.close()
    nodes_of_games = {game["node_id"] for game in games}
    workers = [node for node in nodes if node["NodeID"] not in head]
    assert len(workers) == 2 and all(node["Resources"].get("env_slots") == 12 for node in workers)
    assert len(games) == 4 and not nodes_of_games & set(head)  # every game on a worker, none on the head
    assert len(nodes_of_games) == 2  # four one-game EnvActors of 6 slots: two workers of 12
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(alive_nodes()) > 1:
        time.sleep(2)
    left = ray.get(get_or_create_manager(Settings()).list_games.remote())
    assert len(alive_nodes()) == 1, f"idle workers were not removed (games still listed: {left})"
    print(f"three more sessions placed and played in {placed_after:.1f} s")

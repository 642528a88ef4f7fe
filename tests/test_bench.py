"""The benchmarks run end to end and print the JSON their consumers expect on the last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_bench(*args: str, **settings: str) -> dict:
    """The benchmark's JSON; ``settings`` as ``CROWDPLAY_<NAME>`` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}  # its own Ray instance
    env.update({f"CROWDPLAY_{name.upper()}": value for name, value in settings.items()})
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


def test_load_benchmark_reports_every_figure_the_issue_asks_for():
    result = run_bench("load", "--sessions", "2", "--seconds", "3", "--arrival-interval", "0.1")
    for key in (
        "sessions",
        "on_time_fraction",
        "frames_dropped",
        "key_to_frame_ms",
        "server_apply_ms",
        "start_to_first_frame_ms",
        "rss_mb_per_session",
        "cpu_per_session",
        "bytes_per_s_per_session",
    ):
        assert key in result
    assert result["sessions"] == 2 and result["failed_joins"] == 0
    assert result["frames_delivered"] > 2 * 3 * 50
    assert set(result["key_to_frame_ms"]) == {"p50", "p90", "p99"}


def test_store_benchmark_reports_absorbed_sessions_writer_cpu_and_bytes_per_hour():
    result = run_bench("store", "--sessions", "20", "--seconds", "2", "--play-seconds", "10", "--flat-seconds", "2", "--state-play-seconds", "5")
    assert result["sessions_absorbed"] > 0 and 0 < result["writer_cpu_fraction"] < 1
    assert result["bytes_per_hour_space_invaders"] > 1e6
    state = result["state_env"]
    assert state["env"] == "Acrobot-v1" and 0 < state["observation_bytes_per_hour"] < state["bytes_per_hour"]
    assert state["embedded_chunks_per_s"] > 0
    stats = result["writer"]["writer_stats"]
    assert stats["chunks_written"] >= result["writer"]["live_chunks_sent"] > 0 and stats["chunks_spooled"] == 0


def test_soak_benchmark_drops_and_reconnects_and_every_recorded_episode_replays():
    result = run_bench(
        "soak", "--sessions", "4", "--minutes", "0.5", "--drop-every", "4", "--leave-every", "3", "--grace", "3",
        "--warmup", "0", "--quiet", "1", "--sample-every", "2", "--checkpoint-every", "0.25", "--idle-samples", "2", "--idle-spacing", "1",
    )
    assert result["reconnects"] >= 2 and result["participant_sessions"] > 4  # drops were survived, some left for good
    assert result["reconnects_refused"] == 0 and result["unexpected_closes"] == 0 and result["failed_joins"] == 0
    assert result["episodes"] >= result["games"] and result["games_without_episode"] == 0
    assert result["episodes_incomplete"] == 0 and result["replay_failures"] == 0, result["failed_episode_ids"]
    assert {"memory_flat", "idle_long_lived_growth_mb_per_min", "idle_ray_growth_mb_per_min", "crowdplay_rss_growth_mb", "ray_rss_growth_mb", "rss_mb"} <= set(result)
    assert result["crowdplay_rss_mb"] > 0 and result["ray_rss_mb"] > 0  # both kinds of process were found
    # idle before the play and after each of its two stretches; the manager, writer and ingress replica found in each
    assert result["idle_checkpoints"] == 3 and [minutes for minutes, _ in result["idle_long_lived_mb"]] == [0.0, 0.2, 0.5]
    assert all(mb > 150 for _, mb in result["idle_long_lived_mb"]), result["idle_long_lived_mb"]
    # judged on private memory; file-backed and shared pages reported beside it, the three making up RSS
    kinds = result["idle_long_lived_mb_by_kind"]
    assert result["idle_memory_judged"] == "private" and set(kinds) == set(result["idle_long_lived_growth_mb_per_min_by_kind"]) == {"private", "file", "shared", "rss"}
    assert kinds["private"][0] == result["idle_long_lived_mb"][0][1] and kinds["file"][0] > 50 and kinds["shared"][0] >= 0  # code is file-backed
    assert abs(kinds["rss"][0] - kinds["private"][0] - kinds["file"][0] - kinds["shared"][0]) < 1.0, kinds
    assert {"ray::EnvsManager", "ray::TrajectoryWriter"} <= set(result["idle_growth_mb_per_min_by_process"])
    assert any(title.startswith("ray::ServeReplica") for title in result["idle_growth_mb_per_min_by_process"])
    assert all(mb > 0 for mb in result["idle_envactor_mb"]) and result["idle_ray_mb"] > 0 and result["envactor_rss_mb_max"] > 0
    # what the manager, writer and ingress replica are made of, asked inside each at every checkpoint
    heaps = result["idle_heap_kb"]
    assert {"EnvsManager", "TrajectoryWriter"} <= set(heaps) and any(name.startswith("Ingress#") for name in heaps), heaps
    assert all(len(kinds["malloc_in_use_kb"]) == 3 and all(mapped >= resident > 0 for mapped, resident in zip(kinds["malloc_heaps_kb"], kinds["rss_anon_heaps_kb"])) and min(kinds["python_blocks"]) > 10_000 and min(kinds["rss_anon_kb"]) > 10_000 for kinds in heaps.values())
    assert set(result["idle_heap_growth"]) == set(heaps) and "types" in result["idle_heap_growth"]["EnvsManager"]
    assert set(result["idle_heap_growth"]["EnvsManager"]["rss_anon_by_region_kb"]) == {"main_arena", "other_arenas", "stack", "other"}
    assert set(result["warmup_heap_growth"]) == set(heaps)
    assert result["idle_crowdplay_spread_mb"] >= 0 and "idle_long_lived_warmup_growth_mb" in result and "idle_long_lived_growth_kb_per_session" in result


def test_the_soaks_memory_verdict_fits_a_line_through_the_long_lived_processes_idle_checkpoints():
    from crowdplay.bench.soak import Checkpoint, idle_trend

    def checkpoints(manager_mb, writer_mb, envactor_mb=(143.0,) * 5, raylet_mb=(30.0,) * 5, shared_mb=(20.0,) * 5):
        return [
            Checkpoint(2.0 * index, 20 * index, {1: ("ray::EnvsManager", manager), 2: ("ray::TrajectoryWriter", writer), 10 + index: ("ray::EnvActor", envactor), 4: ("raylet", raylet)}, 0.1,
                       other_kinds={"shared": {1: ("ray::EnvsManager", shared), 2: ("ray::TrajectoryWriter", shared), 4: ("raylet", 1.0)}})
            for index, (manager, writer, envactor, raylet, shared) in enumerate(zip(manager_mb, writer_mb, envactor_mb, raylet_mb, shared_mb))
        ]

    # 0.1 MB a minute of 290 MB is 144 MB a day, past 10% (the line is 0.02 MB a minute): growing
    leaking = idle_trend(checkpoints((140.0,) * 5, (150.0, 150.2, 150.4, 150.6, 150.8)), day_tolerance=0.1)
    assert leaking["memory_flat"] is False and abs(leaking["idle_long_lived_growth_mb_per_min"] - 0.1) < 1e-9
    assert leaking["idle_long_lived_growth_mb_per_min_error"] == 0.0 and abs(leaking["idle_flat_line_mb_per_min"] - 0.1 * 290.4 / 1440) < 1e-4
    assert leaking["idle_growth_mb_per_min_by_process"] == {"ray::EnvsManager": 0.0, "ray::TrajectoryWriter": 0.1}
    assert abs(leaking["idle_long_lived_growth_kb_per_session"] - 1024 * 0.8 / 80) < 1e-6

    # each checkpoint lands somewhere in a band, with no trend; a fresh EnvActor each time and
    # Ray's daemons growing are not fitted
    settling = idle_trend(
        checkpoints((140.0, 140.2, 139.9, 140.1, 140.0), (150.0, 149.9, 150.1, 150.0, 149.9), envactor_mb=(143.0, 150.0, 141.0, 160.0, 142.0), raylet_mb=(30.0, 31.0, 32.0, 33.0, 34.0)),
        day_tolerance=0.1,
    )
    assert settling["memory_flat"] is True and settling["idle_envactor_mb"] == [143.0, 150.0, 141.0, 160.0, 142.0]
    assert settling["idle_ray_growth_mb_per_min"] == 0.5 and settling["idle_ray_mb"] == 30.0

    # the object store's pages mapped in as workers touch more of it are shared memory: reported
    # with their own line, not judged
    mapping_the_store = idle_trend(checkpoints((140.0,) * 5, (150.0,) * 5, shared_mb=(20.0, 21.0, 22.0, 23.0, 24.0)), day_tolerance=0.1)
    assert mapping_the_store["memory_flat"] is True and mapping_the_store["idle_memory_judged"] == "private"
    assert mapping_the_store["idle_long_lived_growth_mb_per_min_by_kind"] == {"private": [0.0, 0.0], "shared": [1.0, 0.0]}
    assert mapping_the_store["idle_long_lived_mb_by_kind"] == {"private": [290.0, 290.0], "shared": [40.0, 48.0]}

    # the same band's spread with a rate near the line: the run cannot tell, so no verdict
    unsure = idle_trend(checkpoints((140.0, 140.4, 139.9, 140.4, 140.2), (150.0, 150.2, 150.1, 150.2, 150.1)), day_tolerance=0.1)
    assert unsure["memory_flat"] is None and unsure["idle_long_lived_growth_mb_per_min_error"] > 0.02
    # and two checkpoints never give one: nothing to tell a band from a trend with
    assert idle_trend(checkpoints((140.0, 140.0), (150.0, 150.0)), day_tolerance=0.1)["memory_flat"] is None


def test_the_soaks_idle_sample_is_each_processs_median_of_its_repeats():
    from crowdplay.bench.soak import median_by_process, spread_mb

    repeats = [
        {1: ("ray::TrajectoryWriter", 150.0), 2: ("ray::EnvsManager", 140.0), 4: ("raylet", 30.0)},
        {1: ("ray::TrajectoryWriter", 150.4), 2: ("ray::EnvsManager", 140.1), 4: ("raylet", 31.0)},  # a health check in flight
        {1: ("ray::TrajectoryWriter", 150.1), 2: ("ray::EnvsManager", 139.9), 4: ("raylet", 30.5), 7: ("ray::EnvActor", 150.0)},
    ]
    median = median_by_process(repeats)
    assert median == {1: ("ray::TrajectoryWriter", 150.1), 2: ("ray::EnvsManager", 140.0), 4: ("raylet", 30.5)}  # 7 came late: left out
    assert abs(spread_mb(repeats) - 0.5) < 1e-9  # CrowdPlay's 290.0, 290.5, 290.0 MB; Ray's and the newcomer not counted


CHILD_WITH_PRIVATE_AND_SHARED_PAGES = """
import mmap, sys
private = bytearray(64 << 20)  # zero-filled: every page written, so resident
shared = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_SHARED)  # shared memory, as Ray's object store is
shared.write(b"x" * (32 << 20))
print("ready", flush=True)
sys.stdin.readline()
"""


def test_the_soak_tells_a_processs_private_memory_from_its_shared_and_file_backed_pages():
    import psutil

    from crowdplay.bench.soak import resident_by_kind

    child = subprocess.Popen([sys.executable, "-c", CHILD_WITH_PRIVATE_AND_SHARED_PAGES], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        by_kind = resident_by_kind([psutil.Process(child.pid)])
    finally:
        child.communicate("\n", timeout=30)
    (title, private), (_, shared), (_, file_backed), (_, rss) = (by_kind[kind][child.pid] for kind in ("private", "shared", "file", "rss"))
    assert title == sys.executable
    assert 64 <= private < 64 + 30 and 32 <= shared < 32 + 2 and file_backed > 1  # the interpreter's code is file-backed
    assert abs(rss - private - shared - file_backed) < 0.01


def test_the_soak_reports_growth_under_load_of_the_processes_alive_throughout():
    from crowdplay.bench.soak import memory_trend

    times = [float(t) for t in range(0, 601, 10)]
    steady_leak = [{1: ("ray::EnvsManager", 1000.0), 2: ("ray::ServeReplica:crowdplay:Ingress", 1000.0 + t / 60)} for t in times]  # +1 MB a minute
    for sample, t in zip(steady_leak, times):
        if 200 <= t < 400:
            sample[3] = ("ray::EnvActor", 150.0)  # started and retired by the pool: not growth
        sample[4] = ("raylet", 30.0 + t / 60)
    trend = memory_trend(times, steady_leak, warmup_s=30.0)
    assert trend["processes_started"] == 1 and trend["processes_stopped"] == 1 and trend["envactor_rss_mb_max"] == 150.0
    assert abs(trend["crowdplay_rss_growth_mb_per_min_second_half"] - 1.0) < 1e-6
    assert abs(trend["crowdplay_rss_growth_mb"] - (575 - 55) / 60) < 0.1  # last minute's mean minus the first's
    assert abs(trend["ray_rss_growth_mb_per_min_second_half"] - 1.0) < 1e-6 and 30 < trend["ray_rss_mb"] < 32

    levelled = [{1: ("ray::EnvsManager", 1000.0), 2: ("ray::TrajectoryWriter", 1000.0 + min(t, 300) / 60), 4: ("raylet", 30.0 + t / 60)} for t in times]
    trend = memory_trend(times, levelled, warmup_s=30.0)
    assert trend["crowdplay_rss_growth_mb_per_min_first_half"] > 0.9 and trend["crowdplay_rss_growth_mb_per_min_second_half"] < 0.05
    assert trend["ray_rss_growth_mb_per_min_second_half"] > 0.9

    # games starting and ending move an EnvActor's memory by MBs: the rate's error says how small a
    # rate the run can tell apart from none (a line through these samples is exact: error 0 above)
    noisy = [{1: ("ray::EnvActor", 1000.0 + (2.0 if int(t) % 20 else -2.0)), 4: ("raylet", 30.0)} for t in times]
    trend = memory_trend(times, noisy, warmup_s=30.0)
    assert abs(trend["crowdplay_rss_growth_mb_per_min_second_half"]) < 2 * trend["crowdplay_rss_growth_mb_per_min_second_half_error"]
    assert 0.1 < trend["crowdplay_rss_growth_mb_per_min_second_half_error"] < 1.0

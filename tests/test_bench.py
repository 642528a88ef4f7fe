"""The benchmarks run end to end and print the JSON their consumers expect on the last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_bench(*args: str) -> dict:
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
    result = run_bench("store", "--sessions", "20", "--seconds", "2", "--play-seconds", "10", "--flat-seconds", "2")
    assert result["sessions_absorbed"] > 0 and 0 < result["writer_cpu_fraction"] < 1
    assert result["bytes_per_hour_space_invaders"] > 1e6
    stats = result["writer"]["writer_stats"]
    assert stats["chunks_written"] >= result["writer"]["live_chunks_sent"] > 0 and stats["chunks_spooled"] == 0


def test_soak_benchmark_drops_and_reconnects_and_every_recorded_episode_replays():
    result = run_bench(
        "soak", "--sessions", "4", "--minutes", "0.5", "--drop-every", "4", "--leave-every", "3", "--grace", "3",
        "--warmup", "0", "--quiet", "1", "--sample-every", "2",
    )
    assert result["reconnects"] >= 2 and result["participant_sessions"] > 4  # drops were survived, some left for good
    assert result["reconnects_refused"] == 0 and result["unexpected_closes"] == 0 and result["failed_joins"] == 0
    assert result["episodes"] >= result["games"] and result["games_without_episode"] == 0
    assert result["episodes_incomplete"] == 0 and result["replay_failures"] == 0, result["failed_episode_ids"]
    assert {"idle_crowdplay_growth_mb", "idle_ray_growth_mb", "memory_flat", "crowdplay_rss_growth_mb", "ray_rss_growth_mb", "rss_mb"} <= set(result)
    assert result["crowdplay_rss_mb"] > 0 and result["ray_rss_mb"] > 0  # both kinds of process were found
    assert result["idle_crowdplay_rss_mb"] > 0 and result["idle_ray_rss_mb"] > 0 and result["envactor_rss_mb_max"] > 0
    assert result["idle_minutes_apart"] >= 0.5 and "idle_crowdplay_warmup_growth_mb" in result
    assert result["idle_crowdplay_spread_mb"] >= 0 and "idle_crowdplay_growth_kb_per_session" in result


def test_the_soaks_memory_verdict_judges_crowdplays_processes_idle_before_and_after():
    from crowdplay.bench.soak import idle_verdict

    before = {1: ("ray::EnvsManager", 140.0), 2: ("ray::TrajectoryWriter", 150.0), 3: ("ray::EnvActor", 143.0), 4: ("raylet", 30.0)}
    leaking = {1: ("ray::EnvsManager", 140.0), 2: ("ray::TrajectoryWriter", 151.0), 5: ("ray::EnvActor", 143.0), 4: ("raylet", 30.0)}
    verdict = idle_verdict(before, leaking, minutes=10.0, day_tolerance=0.1)
    assert verdict["idle_crowdplay_rss_mb"] == 433.0 and verdict["idle_crowdplay_growth_mb_per_min"] == 0.1
    assert not verdict["memory_flat"]  # 144 MB a day > 10% of 433 MB
    assert verdict["idle_growth_mb_by_process"]["ray::EnvActor"] == {"grew_mb": 0.0, "processes": 1, "started": 1, "stopped": 1}

    # a fresh warm-pool EnvActor in place of the old one is the same capacity; Ray's daemons are reported, not judged
    steady = {1: ("ray::EnvsManager", 140.1), 2: ("ray::TrajectoryWriter", 150.1), 6: ("ray::EnvActor", 142.9), 4: ("raylet", 33.0)}
    verdict = idle_verdict(before, steady, minutes=10.0, day_tolerance=0.1)
    assert verdict["memory_flat"] and abs(verdict["idle_crowdplay_growth_mb"] - 0.1) < 1e-9 and verdict["idle_ray_growth_mb"] == 3.0


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

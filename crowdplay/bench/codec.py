"""Frame codec benchmark: bytes and encode time per frame on real Atari play, against JPEG.

The original CrowdPlay sent every frame as a base64 JPEG data URL; this system sends palette
indices, XOR-delta against the previous frame and deflated (``crowdplay.codec``). This benchmark
plays each built-in game with scripted, player-like random input, then encodes the screens exactly
as the real-time loop does for one client that keeps up, and reports

* ``bytes_per_frame``: mean websocket message size, header included;
* ``encode_us``: mean time to build one message (the work done on the EnvActor per frame);
* ``lossless``: every decoded frame equals the emulator's screen, and its colours equal the
  emulator's RGB on sampled frames;
* ``jpeg_b64_bytes_per_frame`` and ``ratio_vs_jpeg``: the old format's size, and how many times
  smaller the new one is.

Screens are collected before any timing, so the emulator's cost never counts as encoding.
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crowdplay import codec
from crowdplay.config import Settings
from crowdplay.environments import EnvAdapter, get_env
from crowdplay.environments.ntsc_palette import NTSC_PALETTE

GAMES: tuple[str, ...] = ("SpaceInvaders", "Breakout", "Pong", "MontezumaRevenge", "Riverraid", "Qbert", "BeamRider")
SCREEN_SHAPE = (210, 160)
#: The emulator's RGB screen is captured on every this many frames, to check the palette.
RGB_SAMPLE_EVERY = 100
#: A scripted player holds each action for 1..MAX_HOLD frames, as a person holds a key.
MAX_HOLD = 15
JPEG_QUALITY = 95


@dataclass
class Recording:
    """The screens of one game's play, with what the encoder and the checks need to know."""

    screens: list[np.ndarray] = field(default_factory=list)
    new_episode: list[bool] = field(default_factory=list)
    rgb: dict[int, np.ndarray] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options on its ``python -m crowdplay.bench codec`` parser."""
    parser.add_argument("--frames", type=int, default=3000, help="frames played per game (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the environment and of the scripted input")
    parser.add_argument("--games", default=",".join(GAMES), help="comma-separated game ids (default: all seven)")
    parser.add_argument("--jpeg-every", type=int, default=10, help="encode the JPEG baseline on every Nth frame (default 10)")


def record(game: str, frames: int, seed: int) -> Recording:
    """Play ``frames`` frames with held random actions, resetting when an episode ends."""
    adapter = EnvAdapter(get_env(game))
    ale = adapter.env.unwrapped.ale  # every game here is an Atari env, whose unwrapped env holds the emulator
    rng = np.random.default_rng(seed)
    recording = Recording()
    try:
        adapter.reset(seed)
        episode, action, hold = 0, 0, 0
        for index in range(frames):
            new_episode = index == 0
            if index > 0:
                if hold == 0:
                    action, hold = int(rng.integers(adapter.action_count)), int(rng.integers(1, MAX_HOLD + 1))
                hold -= 1
                result = adapter.step({agent: action for agent in adapter.agents})
                if result.terminated or result.truncated:
                    episode += 1
                    adapter.reset(seed + episode)
                    new_episode = True
            recording.screens.append(adapter.screen())
            recording.new_episode.append(new_episode)
            if index % RGB_SAMPLE_EVERY == 0:
                recording.rgb[index] = ale.getScreenRGB()
    finally:
        adapter.close()
    return recording


def encode(recording: Recording, keyframe_interval: int) -> tuple[list[bytes], float]:
    """The messages the real-time loop sends a client that keeps up, and the mean µs per message."""
    messages: list[bytes] = []
    previous: codec.Screen | None = None
    start = time.perf_counter_ns()
    for index, (pixels, new_episode) in enumerate(zip(recording.screens, recording.new_episode)):
        screen = codec.Screen(pixels)
        keyframe = previous is None or index % keyframe_interval == 0
        payload = codec.keyframe_payload(screen) if keyframe or previous is None else codec.delta_payload(screen, previous)
        flags = codec.FLAG_NEW_EPISODE if new_episode else 0
        messages.append(codec.frame_message(payload, flags=flags, frame_id=index, env_step=index, score=0.0, input_seq=0))
        previous = screen
    elapsed_ns = time.perf_counter_ns() - start
    return messages, elapsed_ns / 1000 / len(messages)


def is_lossless(recording: Recording, messages: list[bytes]) -> bool:
    """Decode the whole stream; every screen must match, and sampled ones must match the RGB too."""
    decoder = codec.FrameDecoder(SCREEN_SHAPE)
    for index, (message, screen) in enumerate(zip(messages, recording.screens)):
        header, decoded = decoder.decode(message)
        if header.frame_id != index or not np.array_equal(decoded, screen):
            return False
        rgb = recording.rgb.get(index)
        if rgb is not None and not np.array_equal(NTSC_PALETTE[decoded], rgb):
            return False
    return len(messages) == len(recording.screens)


def jpeg_data_url_bytes(screen: np.ndarray) -> int:
    """Size of the original system's frame: the RGB screen as a JPEG base64 data URL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(NTSC_PALETTE[screen]).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return len(url.encode("ascii"))


def bench_game(game: str, frames: int, seed: int, jpeg_every: int, keyframe_interval: int) -> dict[str, Any]:
    """Bytes and encode time per frame of ``game``'s codec stream over ``frames`` of scripted play,
    whether it decodes losslessly, and the JPEG data-URL baseline on every ``jpeg_every``-th frame."""
    recording = record(game, frames, seed)
    messages, encode_us = encode(recording, keyframe_interval)
    bytes_per_frame = sum(map(len, messages)) / len(messages)
    jpeg = float(np.mean([jpeg_data_url_bytes(s) for s in recording.screens[::jpeg_every]]))
    return {
        "bytes_per_frame": round(bytes_per_frame, 2),
        "encode_us": round(encode_us, 2),
        "lossless": is_lossless(recording, messages),
        "jpeg_b64_bytes_per_frame": round(jpeg, 2),
        "ratio_vs_jpeg": round(jpeg / bytes_per_frame, 2),
        "frames": len(messages),
    }


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every game's figures and their geometric mean, worst encode time and smallest gain over JPEG."""
    games = [game.strip() for game in args.games.split(",") if game.strip()]
    if args.frames < 1 or args.jpeg_every < 1 or not games:
        raise SystemExit("--frames and --jpeg-every must be positive and --games must name at least one game")
    interval = Settings().keyframe_interval
    results = {game: bench_game(game, args.frames, args.seed, args.jpeg_every, interval) for game in games}
    return {
        "games": results,
        "geomean_bytes_per_frame": round(_geomean([r["bytes_per_frame"] for r in results.values()]), 2),
        "max_encode_us": max(r["encode_us"] for r in results.values()),
        "min_ratio_vs_jpeg": min(r["ratio_vs_jpeg"] for r in results.values()),
        "frames_per_game": args.frames,
        "jpeg_sample_every": args.jpeg_every,
    }


def summarize(result: dict[str, Any]) -> str:
    """A fixed-width table of the per-game numbers and the summary line."""
    columns = ("bytes_per_frame", "encode_us", "jpeg_b64_bytes_per_frame", "ratio_vs_jpeg", "lossless")
    headings = ("game", "bytes/frame", "encode µs", "jpeg b64 bytes", "x smaller", "lossless")
    lines = ["{:<18}{:>13}{:>11}{:>16}{:>11}{:>10}".format(*headings)]
    for game, row in result["games"].items():
        lines.append("{:<18}{:>13}{:>11}{:>16}{:>11}{:>10}".format(game, *(str(row[c]) for c in columns)))
    lines.append(
        f"geomean {result['geomean_bytes_per_frame']} bytes/frame, max encode {result['max_encode_us']} µs, "
        f"at least {result['min_ratio_vs_jpeg']}x smaller than JPEG "
        f"({result['frames_per_game']} frames/game, JPEG on every {result['jpeg_sample_every']}th)"
    )
    return "\n".join(lines)

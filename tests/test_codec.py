"""The frame codec is lossless on real emulator screens and refuses broken input clearly."""

from __future__ import annotations

import numpy as np
import pytest

from crowdplay import codec
from crowdplay.environments.replay import replay_screens


def encode_stream(screens, keyframe_every=300):
    previous = None
    for i, pixels in enumerate(screens):
        screen = codec.Screen(pixels)
        if previous is None or i % keyframe_every == 0:
            payload = codec.keyframe_payload(screen)
        else:
            payload = codec.delta_payload(screen, previous)
        yield codec.frame_message(payload, flags=0, frame_id=i, env_step=i, score=float(i), input_seq=i)
        previous = screen


def test_palette_screens_round_trip_exactly_through_keyframes_and_deltas():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 6, size=600)
    screens = [s.copy() for s in replay_screens("SpaceInvaders", 0, actions)]
    decoder = codec.FrameDecoder(screens[0].shape)
    for i, message in enumerate(encode_stream(screens, keyframe_every=250)):
        header, decoded = decoder.decode(message)
        assert header.frame_id == i and header.input_seq == i and header.score == float(i)
        assert header.keyframe == (i % 250 == 0)
        assert np.array_equal(decoded, screens[i])


def test_rgb_screens_round_trip_exactly():
    rng = np.random.default_rng(3)
    screens = [rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8) for _ in range(3)]
    screens.append(screens[-1].copy())
    screens[-1][10:12, 5:9] ^= 0x55
    decoder = codec.FrameDecoder((48, 64, 3))
    for i, message in enumerate(encode_stream(screens)):
        _, decoded = decoder.decode(message)
        assert np.array_equal(decoded, screens[i])


def test_an_unchanged_screen_costs_only_the_header():
    screen = np.zeros((210, 160), dtype=np.uint8)
    assert codec.delta_payload(codec.Screen(screen), codec.Screen(screen.copy())) == codec.Payload(b"", 0)


def test_deltas_cover_only_the_changed_rows_and_columns():
    before = np.zeros((210, 160), dtype=np.uint8)
    after = before.copy()
    after[100:103, 7] = 14
    after[100, 9] = 2
    payload = codec.delta_payload(codec.Screen(after), codec.Screen(before))
    assert codec.BAND.unpack_from(payload.data) == (100, 3, 7, 3)
    assert payload.flags == 0


def test_scrolled_rows_are_moved_instead_of_resent():
    rng = np.random.default_rng(5)
    before = rng.integers(0, 128, size=(210, 160), dtype=np.uint8) * 2
    after = np.roll(before, 3, axis=0)  # everything scrolls down three rows
    after[:3] = 0
    payload = codec.delta_payload(codec.Screen(after), codec.Screen(before))
    assert payload.flags & codec.FLAG_ROW_MOVES
    assert len(payload.data) < 3 * 160 + 200  # only the three new rows cost bytes; 207 rows are copies
    decoder = codec.FrameDecoder(before.shape)
    decoder.decode(codec.frame_message(codec.keyframe_payload(codec.Screen(before)), flags=0, frame_id=0, env_step=0, score=0, input_seq=0))
    _, decoded = decoder.decode(codec.frame_message(payload, flags=0, frame_id=1, env_step=1, score=0, input_seq=0))
    assert np.array_equal(decoded, after)


def test_rows_with_colliding_hashes_are_still_sent_exactly(monkeypatch):
    before = np.arange(210 * 160, dtype=np.uint64).astype(np.uint8).reshape(210, 160)
    after = np.roll(before, 1, axis=0)
    previous, screen = codec.Screen(before), codec.Screen(after)
    # Force every row hash equal to its shifted twin, and corrupt one row's content behind the hash's back.
    after[50] ^= 0xFF
    screen._row_hashes = np.roll(previous.row_hashes, 1)
    decoder = codec.FrameDecoder(before.shape)
    decoder.decode(codec.frame_message(codec.keyframe_payload(previous), flags=0, frame_id=0, env_step=0, score=0, input_seq=0))
    payload = codec.delta_payload(screen, previous)
    _, decoded = decoder.decode(codec.frame_message(payload, flags=0, frame_id=1, env_step=1, score=0, input_seq=0))
    assert np.array_equal(decoded, after)


def test_broken_messages_raise_decode_errors():
    decoder = codec.FrameDecoder((4, 16))
    screen = codec.Screen(np.arange(64, dtype=np.uint8).reshape(4, 16))
    blank = codec.Screen(np.zeros((4, 16), dtype=np.uint8))
    delta = codec.frame_message(codec.delta_payload(screen, blank), flags=0, frame_id=1, env_step=1, score=0, input_seq=0)
    with pytest.raises(codec.DecodeError, match="before any keyframe"):
        decoder.decode(delta)
    with pytest.raises(codec.DecodeError, match="shorter"):
        decoder.decode(b"\x01\x01")
    key = codec.frame_message(codec.keyframe_payload(screen), flags=0, frame_id=0, env_step=0, score=0, input_seq=0)
    with pytest.raises(codec.DecodeError, match="corrupt"):
        decoder.decode(key[:-3] + b"xyz")
    with pytest.raises(codec.DecodeError, match="unknown message kind"):
        decoder.decode(b"\x07" + key[1:])
    decoder.decode(key)
    with pytest.raises(codec.DecodeError, match="exceed"):
        decoder.decode(key[:16] + codec.BAND.pack(3, 4, 0, 16) + key[24:])
    with pytest.raises(codec.DecodeError, match="before any keyframe"):
        decoder.decode(delta)  # after a failed frame the decoder waits for a keyframe

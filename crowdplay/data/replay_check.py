"""Replay check: re-run a recorded episode and compare it with the recording, for any environment.

Two ways, chosen by the recording:

- **Atari (ALE)**, whose episodes carry emulator snapshots: the emulator is restored from the
  recorded state at (or before) ``from_step``, the recorded actions are applied, and every screen
  (palette indices) and reward is compared exactly with what was stored.
- **Every other Gymnasium or PettingZoo environment**: the environment is built from the registry
  (the recording's ``env_id``; ``crowdplay data`` loads the deployment's plugins first), reset with
  the recorded ``seed`` and ``reset_options``, and the recorded actions are applied, every agent's
  at once. After the reset and after every step, each agent's observation (leaf by leaf of its
  recorded space), each agent's reward, the environment's terminated/truncated flags and the
  frame (the rendered screen the participant saw) are compared with the recording. In a
  PettingZoo environment an agent that is done is not stepped and keeps its last observation, as
  during play (``ParallelEnvAdapter.step`` does both, in the replay too). These episodes always
  replay from the reset (``from_step`` is for ALE snapshots only). An episode cut short
  (finished, interrupted, or its last chunks lost) replays only its stored steps; its last step,
  which the loader marks truncated, is not compared for truncation.

Comparison: integer and boolean data (observation leaves of those dtypes, flags, frames) must be
equal. Floating-point data (float observation leaves, rewards) must be within ``FLOAT_RTOL`` and
``FLOAT_ATOL`` (``numpy.isclose(replayed, recorded, rtol, atol, equal_nan=True)``, NaN equal to
NaN). Observations are stored losslessly in their own dtype, so a replay with the same code on the
same machine is bit for bit identical; the tolerance is for replays elsewhere, where another CPU,
BLAS or libm build (vectorised sums, fused multiply-add) may round the last bits differently.
``rtol=1e-5`` is about a hundred float32 ulps (float32 resolves 1.2e-7), room for such rounding to
accumulate over a few hundred steps of integration, yet far below any real divergence (a
different action or state moves values by orders of magnitude more); ``atol=1e-6`` covers values
that should be 0 and come out as tiny residues.

Outcome (``ReplayReport.status``, and the exit code of ``crowdplay data replay-check``; 2 there
means the episode does not exist):

- ``match`` (0): every compared value agrees.
- ``mismatch`` (1): the environment is deterministic as far as the check can tell, and the replay
  disagrees with the recording: the recording is not a trajectory of this environment as it is
  now (tampered data, or the environment's code changed). ``first_divergence`` names the first
  step (``reset``, or step ``k``: after action ``k``), agent and observation leaf (or reward,
  flag, frame) that differed, with both values; the per-kind lists hold every differing step.
- ``not replayable`` (3): ``reason`` says why, and nothing is claimed about the recording: the
  environment declares itself nondeterministic (``EnvSpec.replayable`` False or a reason string,
  or its Gymnasium registration's ``nondeterministic``); the recording has no seed or no recorded
  observations (recorded before those were kept), no snapshot (Atari) or no steps; the
  environment is not registered here or cannot be built; or it proved nondeterministic.

Determinism probe: before replaying, the environment is reset twice with the recorded seed and
options and the two first observations and frames compared (unseeded randomness or time in
``reset`` shows there). The replay itself runs on a freshly built environment, as a game's first
episode was recorded on one. When it diverges from the recording at some step, the episode is
replayed a second time up to that step, on another fresh environment: if the second replay
differs from the first (anywhere up to and including that step), the environment is
nondeterministic and the episode "not replayable". If the episode was not its game's first (its
recording began on an environment that had played the episodes before), it is replayed once more
on the environment just used: if that differs, the environment's ``reset(seed)`` does not clear
all of its state (PettingZoo's Knights Archers Zombies keeps its zombie-spawn counter, say) and
the episode is "not replayable" from its seed alone. If the replays agree, the recording is what
differs: a ``mismatch``. An environment whose randomness happens to reproduce the recording passes
as a match (the recorded trajectory was reproduced); one whose randomness differs between two
replays only rarely can come out as a mismatch: declare such an environment with
``EnvSpec.replayable``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from crowdplay import codec
from crowdplay.data.dataset import Dataset
from crowdplay.data.episode import Episode
from crowdplay.data.loading import chunk_screens
from crowdplay.environments import get_env, make_adapter
from crowdplay.environments.adapter import EnvAdapter
from crowdplay.environments.registry import UnknownEnvironment
from crowdplay.environments.spaces import Description, Leaves, ObservationOutsideSpace, leaves

#: Relative and absolute tolerance for floating-point observations and rewards (see the module
#: docstring for why these values); integers, booleans and frames are compared exactly.
FLOAT_RTOL = 1e-5
FLOAT_ATOL = 1e-6

MATCH = "match"
MISMATCH = "mismatch"
NOT_REPLAYABLE = "not replayable"
#: ``crowdplay data replay-check``'s exit code per status (2: no such episode).
EXIT_CODES = {MATCH: 0, MISMATCH: 1, NOT_REPLAYABLE: 3}
#: The step number of the observation (and frame) ``reset`` returned, in the mismatch lists.
RESET = -1
#: How differences name the two trajectories compared: (this one, the reference).
REPLAYED_AND_RECORDED = ("replayed", "recorded")
SECOND_AND_FIRST = ("second", "first")


@dataclass
class ReplayReport:
    """What a replay check found. Step numbers: ``k`` is the step applying action ``k`` (its
    reward, flags, and the observation and frame after it); ``RESET`` (-1) is the reset."""

    episode_id: str
    from_step: int = 0
    steps_checked: int = 0
    frame_mismatches: list[int] = field(default_factory=list)
    reward_mismatches: list[int] = field(default_factory=list)
    observation_mismatches: list[int] = field(default_factory=list)
    #: steps whose terminated/truncated flag differs (or where the replay ended early)
    ending_mismatches: list[int] = field(default_factory=list)
    #: the first difference: "step 12, agent agent_0: observation 'position' recorded ..., replayed ..."
    first_divergence: str | None = None
    #: set when the episode is not replayable: why (the lists then mean nothing)
    reason: str | None = None

    @property
    def status(self) -> str:
        """``match``, ``mismatch`` or ``not replayable`` (when ``reason`` says why)."""
        if self.reason is not None:
            return NOT_REPLAYABLE
        if self.first_divergence is not None or self.frame_mismatches or self.reward_mismatches or self.observation_mismatches or self.ending_mismatches:
            return MISMATCH
        return MATCH

    @property
    def ok(self) -> bool:
        """Whether the replay matched the recording."""
        return self.status == MATCH

    @property
    def exit_code(self) -> int:
        """The process exit code for ``status``: 0 match, 1 mismatch, 3 not replayable."""
        return EXIT_CODES[self.status]

    def note(self, step: int, kind: str, what: str) -> None:
        """Record a difference of ``kind`` (observation, reward, ending, frame, error) at ``step``."""
        found = {
            "observation": self.observation_mismatches, "reward": self.reward_mismatches,
            "ending": self.ending_mismatches, "frame": self.frame_mismatches,
        }.get(kind)
        if found is not None and (not found or found[-1] != step):
            found.append(step)
        if self.first_divergence is None:
            self.first_divergence = f"{_step_name(step)}, {what}"

    def summary(self) -> str:
        """One line for people: the verdict and, on a mismatch, the first divergence and what differed."""
        status = self.status
        if status == NOT_REPLAYABLE:
            return f"{self.episode_id}: not replayable: {self.reason}"
        if status == MATCH:
            return f"{self.episode_id}: replay matches ({self.steps_checked} steps from step {self.from_step})"
        counts = [
            (len(self.observation_mismatches), "observation"), (len(self.reward_mismatches), "reward"),
            (len(self.ending_mismatches), "ending"), (len(self.frame_mismatches), "frame"),
        ]
        listed = ", ".join(f"{count} {kind}" for count, kind in counts if count) or "no"
        return (
            f"{self.episode_id}: replay does not match the recording: first divergence at {self.first_divergence}; "
            f"steps with differences: {listed} ({self.steps_checked} steps checked from step {self.from_step})"
        )


def _step_name(step: int) -> str:
    return "reset" if step == RESET else f"step {step}"


def replay_check(dataset: Dataset, episode_id: str, from_step: int = 0) -> ReplayReport:
    """Replay a recorded episode and compare it with the recording (see the module docstring).

    ALE episodes replay from the latest snapshot at or before ``from_step`` to the end of the
    recording; every other environment's from the reset. Raises only ``EpisodeNotFound``; an
    episode that cannot be replayed is reported with ``status`` "not replayable" and a reason."""
    meta = dataset.episode(episode_id)
    report = ReplayReport(episode_id, from_step)
    if meta.get("palette") == "ntsc" or meta.get("start_state") is not None:
        _replay_ale(dataset, meta, report)
    else:
        report.from_step = 0
        _replay_env(dataset, meta, report)
    return report


# ----------------------------------------------------------------- what can be replayed
def _registered(meta: dict[str, Any], report: ReplayReport) -> Any:
    """The environment's spec from the registry, or None with the reason set."""
    env_id = str(meta.get("env_id"))
    try:
        spec = get_env(env_id)
    except UnknownEnvironment:
        report.reason = f"environment {env_id!r} is not registered here: load the plugin that registers it (CROWDPLAY_PLUGINS)"
        return None
    if spec.replayable is not True:
        why = spec.replayable if isinstance(spec.replayable, str) and spec.replayable else "its EnvSpec sets replayable=False"
        report.reason = f"environment {env_id!r} declares itself nondeterministic: {why}"
        return None
    return spec


def _built(spec: Any, report: ReplayReport) -> EnvAdapter | None:
    try:
        return make_adapter(spec)
    except Exception as error:  # a missing dependency, a broken plugin: nothing to replay with
        report.reason = f"environment {spec.id!r} cannot be built here: {type(error).__name__}: {error}"
        return None


def _declared_nondeterministic(meta: dict[str, Any], adapter: EnvAdapter | None) -> str | None:
    """Why the environment's Gymnasium registration says it is nondeterministic (the recorded one,
    or the environment's as built now), or None."""
    recorded = (meta.get("env_origin") or {}).get("gymnasium_spec")
    if recorded:
        try:
            registration = json.loads(recorded)
        except (TypeError, ValueError):
            registration = {}
        if isinstance(registration, dict) and registration.get("nondeterministic"):
            return f"its Gymnasium registration {registration.get('id')!r} is marked nondeterministic"
    live = getattr(adapter.env, "spec", None) if adapter is not None else None
    if isinstance(live, gym.envs.registration.EnvSpec) and live.nondeterministic:
        return f"its Gymnasium registration {live.id!r} is marked nondeterministic"
    return None


# ----------------------------------------------------------------- ALE
def _replay_ale(dataset: Dataset, meta: dict[str, Any], report: ReplayReport) -> None:
    """Restore the emulator from the snapshot at or before ``report.from_step`` and compare every
    screen (palette indices) and reward exactly."""
    spec = _registered(meta, report)
    if spec is None:
        return
    episode = dataset.load(report.episode_id, observations="palette")
    start = max((step for step in episode.snapshots if step <= report.from_step), default=0)
    state = episode.snapshots.get(start, meta.get("start_state"))
    if state is None:
        report.reason = "the recording has no emulator snapshot to replay from"
        return
    report.from_step = start
    if start >= episode.steps:
        report.reason = f"nothing to replay from step {start}: the recording has {episode.steps} stored steps"
        return
    adapter = _built(spec, report)
    if adapter is None:
        return
    try:
        adapter.reset(meta.get("seed", 0))
        adapter.restore(state)
        _compare_ale(adapter, episode, start, report)
    finally:
        adapter.close()


def _compare_ale(adapter: EnvAdapter, episode: Episode, start: int, report: ReplayReport) -> None:
    """Step ``adapter``, restored to step ``start``, through the recorded actions and note every
    screen and reward that differs. The screen buffer is not part of an emulator state, so
    checking starts with the screen after the first step replayed."""
    agents = list(episode.agents)
    first = episode.agents[agents[0]]
    for step in range(start, episode.steps):
        result = adapter.step({agent: int(episode.agents[agent].actions[step]) for agent in agents})
        report.steps_checked += 1
        screen = adapter.screen()
        if not np.array_equal(screen, first.observations[step + 1]):
            report.note(step, "frame", f"the frame differs ({_frame_difference(first.observations[step + 1], screen)})")
        for agent in agents:
            recorded = float(episode.agents[agent].rewards[step])
            if result.rewards[agent] != recorded:
                report.note(step, "reward", f"agent {agent}: reward recorded {recorded!r}, replayed {result.rewards[agent]!r}")


# ----------------------------------------------------------------- every other environment
@dataclass
class _Tick:
    """One point of a trajectory, replayed or recorded: the observations (per agent, its leaves'
    values in ``leaves`` order), rewards and flags of a step (none for the reset), the frame."""

    step: int
    observations: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rewards: dict[str, float] | None = None
    terminated: bool = False
    truncated: bool = False
    screen: np.ndarray | None = None
    #: the environment raised (replays only): what
    error: str | None = None


def _replay_env(dataset: Dataset, meta: dict[str, Any], report: ReplayReport) -> None:
    spaces: dict[str, Description] | None = meta.get("observation_spaces")
    if meta.get("seed") is None:
        report.reason = "the recording has no seed (recorded before seeds were kept)"
        return
    if not spaces:
        report.reason = "the recording has no observations of the environment's own (recorded before observations were kept)"
        return
    declared = _declared_nondeterministic(meta, None)
    if declared is not None:
        report.reason = f"environment {meta.get('env_id')!r} declares itself nondeterministic: {declared}"
        return
    spec = _registered(meta, report)
    if spec is None:
        return
    episode = dataset.load(report.episode_id, observations="env")
    if episode.steps == 0:
        report.reason = "the recording has no stored steps"
        return
    replay = _Replay(dataset, episode, spec, spaces)
    try:
        replay.run(report)
    finally:
        replay.close()


class _Replay:
    """Replays one recorded episode, as often as the checks need, each time on an environment
    built for it (as the recording's game was: a fresh one, see ``run``)."""

    def __init__(self, dataset: Dataset, episode: Episode, spec: Any, spaces: dict[str, Description]) -> None:
        self.dataset, self.episode, self.spec = dataset, episode, spec
        self.agents = list(episode.agents)
        self.meta = episode.meta
        self.seed = int(self.meta["seed"])
        self.options = self.meta.get("reset_options")
        self.splitters = {agent: Leaves(spaces[agent]) for agent in self.agents}
        self.paths = {agent: [leaf.path for leaf in leaves(spaces[agent])] for agent in self.agents}
        self.frames = bool(self.meta.get("screen_shape"))
        #: whether the last step's flags are the environment's own (not the loader's "cut short")
        self.genuine_end = self.meta.get("status") == "complete" and self.meta.get("steps") == episode.steps
        self.adapters: list[EnvAdapter] = []

    def close(self) -> None:
        for adapter in self.adapters:
            try:
                adapter.close()
            except Exception:  # closing is best effort: the verdict is made
                pass

    def _build(self, report: ReplayReport) -> EnvAdapter | None:
        adapter = _built(self.spec, report)
        if adapter is not None:
            self.adapters.append(adapter)
        return adapter

    def run(self, report: ReplayReport) -> None:
        """Probe the resets, replay the whole episode on a fresh environment (a game's first
        episode is played on a fresh one; later ones on the same instance, after the episodes
        before), and where it diverges from the recording, find out whether the environment is
        to blame (``_probe_divergence``)."""
        if not self._probed(report):
            return
        adapter = self._build(report)
        if adapter is None:
            return
        first = self._compare(adapter, report)
        if first is not None:
            reason = self._probe_divergence(first, adapter, report)
            if reason is not None:
                report.reason = reason

    def _probed(self, report: ReplayReport) -> bool:
        """Whether an environment built now can replay the recording at all: it builds, does not
        declare itself nondeterministic, has the recorded agents and resets the same way twice.
        If not, ``report`` says why."""
        probe = self._build(report)
        if probe is None:
            return False
        declared = _declared_nondeterministic(self.meta, probe)
        if declared is not None:
            report.reason = f"environment {self.spec.id!r} declares itself nondeterministic: {declared}"
            return False
        if sorted(probe.agents) != sorted(self.agents):
            report.note(RESET, "error", f"the environment now has agents {list(probe.agents)}, the recording {self.agents}")
            return False
        report.reason = self._probe_reset(probe)
        return report.reason is None

    def _compare(self, adapter: EnvAdapter, report: ReplayReport) -> _Tick | None:
        """Replay the episode on ``adapter`` and note every difference from the recording in
        ``report``; the first replayed tick that differed, or None."""
        first: _Tick | None = None
        for replayed, recorded in zip(self._trace(adapter, self.episode.steps), self._recorded()):
            if replayed.step >= 0:
                report.steps_checked += 1
            differences = self._differences(replayed, recorded)
            for kind, what in differences:
                report.note(replayed.step, kind, what)
            if differences and first is None:
                first = replayed
        return first

    # ------------------------------------------------------------- probes
    def _probe_reset(self, adapter: EnvAdapter) -> str | None:
        """Reset twice with the recorded seed and options: the two first observations and frames
        must agree, or the environment is not deterministic."""
        once = next(self._trace(adapter, 0))
        again = next(self._trace(adapter, 0))
        if once.error is not None:
            return None  # the replay reports it (a mismatch, unless the second replay differs)
        differences = self._differences(again, once, SECOND_AND_FIRST)
        if differences:
            return f"two resets with seed {self.seed} give different results ({differences[0][1]}): the environment is not deterministic"
        return None

    def _probe_divergence(self, first: _Tick, used: EnvAdapter, report: ReplayReport) -> str | None:
        """The first replay diverged from the recording at ``first.step``: replay again up to
        there on another fresh environment. If the two replays differ, the environment is not
        deterministic. If they agree and the episode was not its game's first, its recording began
        on an environment that had played the episodes before: replay once more on the one just
        used, and if that differs, ``reset`` does not clear all of the environment's state, so the
        episode cannot be replayed from its seed. Otherwise the recording is what differs (None)."""
        fresh = self._build(report)
        if fresh is None:
            return report.reason
        step, what = self._second_replay(first, fresh)
        if step is not None:
            return f"two replays with seed {self.seed} and the same actions differ at {step} ({what}): the environment is not deterministic"
        index = self.meta.get("episode") or 0
        if index > 0:
            step, what = self._second_replay(first, used)
            if step is not None:
                return (
                    f"the recording is episode {index} of its game, played on an environment that had played the episodes before, "
                    f"and this environment's reset(seed) does not clear all of its state (a replay after another differs at {step}: {what}): "
                    "it cannot be replayed from its seed alone"
                )
        return None

    def _second_replay(self, first: _Tick, adapter: EnvAdapter) -> tuple[str | None, str | None]:
        """Where a replay up to ``first.step`` on ``adapter`` differs from the first replay (which
        matched the recording before that step), or (None, None)."""
        last = None
        for replayed, recorded in zip(self._trace(adapter, first.step + 1), self._recorded()):
            last = replayed
            reference = first if replayed.step == first.step else recorded
            differences = self._differences(replayed, reference, SECOND_AND_FIRST)
            if differences:
                return _step_name(replayed.step), differences[0][1]
        if last is None or last.step != first.step:
            return (_step_name(last.step) if last is not None else "the start"), "the second replay ended there, the first went on"
        return None, None

    # ------------------------------------------------------------- trajectories
    def _trace(self, adapter: EnvAdapter, steps: int) -> Iterator[_Tick]:
        """A replay on ``adapter``: the reset, then up to ``steps`` recorded steps; stops after a
        step where the environment raised or ended before the recording did."""
        try:
            adapter.reset(self.seed, dict(self.options) if self.options is not None else None)
        except Exception as error:
            yield _Tick(RESET, error=_raised(error))
            return
        tick = self._observe(adapter, _Tick(RESET))
        yield tick
        if tick.error is not None:
            return
        for step in range(steps):
            actions = {agent: int(self.episode.agents[agent].actions[step]) for agent in self.agents}
            try:
                result = adapter.step(actions)
            except Exception as error:
                yield _Tick(step, error=_raised(error))
                return
            tick = self._observe(adapter, _Tick(step, rewards=dict(result.rewards), terminated=result.terminated, truncated=result.truncated))
            yield tick
            if tick.error is not None or tick.terminated or tick.truncated:
                return

    def _observe(self, adapter: EnvAdapter, tick: _Tick) -> _Tick:
        """Fill ``tick`` with ``adapter``'s current observations (split into the recorded spaces'
        leaves, copied) and screen."""
        for agent in self.agents:
            try:
                values = self.splitters[agent].split(adapter.observations[agent])
            except (ObservationOutsideSpace, KeyError) as error:
                tick.error = f"agent {agent}: the replayed observation does not fit the recorded space: {error}"
                return tick
            tick.observations[agent] = [np.array(value, copy=True) for value in values]
        if self.frames:
            try:
                tick.screen = adapter.screen()
            except Exception as error:
                tick.error = f"the screen cannot be rendered: {type(error).__name__}: {error}"
        return tick

    def _recorded(self) -> Iterator[_Tick]:
        """The recording as ticks: the reset's observation and frame, then every stored step."""
        columns = {agent: _flatten(self.meta["observation_spaces"][agent], self.episode.agents[agent].observations) for agent in self.agents}
        screens = self._screens() if self.frames else iter(())
        flags = self.episode.agents[self.agents[0]]
        for step in range(RESET, self.episode.steps):
            observations = {agent: [columns[agent][path][step + 1] for path in self.paths[agent]] for agent in self.agents}
            tick = _Tick(step, observations, screen=next(screens, None))
            if step >= 0:
                tick.rewards = {agent: float(self.episode.agents[agent].rewards[step]) for agent in self.agents}
                tick.terminated, tick.truncated = bool(flags.terminations[step]), bool(flags.truncations[step])
            yield tick

    def _screens(self) -> Iterator[np.ndarray]:
        """The recorded frames in order, decoded chunk by chunk (an episode's RGB frames can be
        far larger than memory); stops at a frame that cannot be decoded."""
        shape = self.meta["screen_shape"]
        first = True
        for chunk in self.dataset.chunks(self.episode.episode_id):
            try:
                screens = chunk_screens(chunk, shape, first)
            except codec.DecodeError:
                return
            first = False
            yield from screens

    # ------------------------------------------------------------- comparing
    def _differences(self, replayed: _Tick, reference: _Tick, labels: tuple[str, str] = REPLAYED_AND_RECORDED) -> list[tuple[str, str]]:
        """How ``replayed`` differs from ``reference`` (the recording, or another replay; ``labels``
        name the two in the descriptions): (kind, description) pairs, in the order observation,
        reward, ending, frame."""
        if replayed.error is not None or reference.error is not None:
            return _error_difference(replayed, reference, labels)
        return [
            *self._observation_differences(replayed, reference, labels),
            *self._step_differences(replayed, reference, labels),
            *_screen_difference(replayed, reference, labels),
        ]

    def _observation_differences(self, replayed: _Tick, reference: _Tick, labels: tuple[str, str]) -> list[tuple[str, str]]:
        """Every agent's observation leaves that differ, in the recorded spaces' leaf order."""
        found: list[tuple[str, str]] = []
        for agent in self.agents:
            for path, expected, value in zip(self.paths[agent], reference.observations[agent], replayed.observations[agent]):
                if not _same(expected, value):
                    leaf = f" {path!r}" if path else ""
                    found.append(("observation", f"agent {agent}: observation{leaf} {_difference(expected, value, labels)}"))
        return found

    def _step_differences(self, replayed: _Tick, reference: _Tick, labels: tuple[str, str]) -> list[tuple[str, str]]:
        """Differing rewards and ending flags of a step (a reset has neither). The recording's last
        truncated flag is compared only if the environment set it: the loader marks an episode cut
        short as truncated there."""
        if replayed.rewards is None or reference.rewards is None:
            return []
        mine, theirs = labels
        found: list[tuple[str, str]] = []
        for agent in self.agents:
            recorded_reward, reward = reference.rewards[agent], replayed.rewards.get(agent, 0.0)
            if not np.isclose(reward, recorded_reward, rtol=FLOAT_RTOL, atol=FLOAT_ATOL, equal_nan=True):
                found.append(("reward", f"agent {agent}: reward {theirs} {recorded_reward!r}, {mine} {reward!r}"))
        last = replayed.step == self.episode.steps - 1
        if replayed.terminated != reference.terminated:
            found.append(("ending", f"terminated {theirs} {reference.terminated}, {mine} {replayed.terminated}"))
        if replayed.truncated != reference.truncated and (self.genuine_end or not last):
            found.append(("ending", f"truncated {theirs} {reference.truncated}, {mine} {replayed.truncated}"))
        return found


def _error_difference(replayed: _Tick, reference: _Tick, labels: tuple[str, str]) -> list[tuple[str, str]]:
    """A tick where either side raised: the same error on both sides agrees, anything else differs."""
    if replayed.error == reference.error:
        return []
    return [("error", replayed.error or f"the {labels[1]} failed: {reference.error}")]


def _screen_difference(replayed: _Tick, reference: _Tick, labels: tuple[str, str]) -> list[tuple[str, str]]:
    """The frame difference, if both ticks have a frame and they differ."""
    if replayed.screen is None or reference.screen is None or np.array_equal(replayed.screen, reference.screen):
        return []
    return [("frame", f"the frame differs ({_frame_difference(reference.screen, replayed.screen, labels)})")]

def _flatten(description: Description, value: Any, path: str = "") -> dict[str, np.ndarray]:
    """An assembled observation (arrays, dicts and tuples of them) as ``{leaf path: array}``."""
    kind = description["type"]
    if kind == "Dict":
        found: dict[str, np.ndarray] = {}
        for key, sub in description["spaces"].items():
            found.update(_flatten(sub, value[key], f"{path}/{key}" if path else key))
        return found
    if kind == "Tuple":
        found = {}
        for index, sub in enumerate(description["spaces"]):
            found.update(_flatten(sub, value[index], f"{path}/{index}" if path else str(index)))
        return found
    return {path: value}


def _floating(*arrays: np.ndarray) -> bool:
    return any(array.dtype.kind in "fc" for array in arrays)


def _same(expected: Any, value: Any) -> bool:
    """Exactly equal, or for floating-point data within the tolerance."""
    expected, value = np.asarray(expected), np.asarray(value)
    if expected.shape != value.shape:
        return False
    if _floating(expected, value):
        return bool(np.allclose(value, expected, rtol=FLOAT_RTOL, atol=FLOAT_ATOL, equal_nan=True))
    return bool(np.array_equal(expected, value))


def _shown(value: np.ndarray) -> str:
    return repr(value.item()) if value.ndim == 0 else np.array2string(value, precision=6, separator=", ")


def _difference(expected: Any, value: Any, labels: tuple[str, str]) -> str:
    """Both values when they are small, else where they differ; ``labels`` name ``value``'s
    trajectory and ``expected``'s."""
    mine, theirs = labels
    expected, value = np.asarray(expected), np.asarray(value)
    if expected.shape != value.shape:
        return f"has shape {expected.shape} {theirs}, {value.shape} {mine}"
    if expected.size <= 8:
        return f"{theirs} {_shown(expected)}, {mine} {_shown(value)}"
    if _floating(expected, value):
        differing = ~np.isclose(value, expected, rtol=FLOAT_RTOL, atol=FLOAT_ATOL, equal_nan=True)
    else:
        differing = expected != value
    where = tuple(int(i) for i in np.argwhere(differing)[0])
    return f"differs in {int(differing.sum())} of {expected.size} values, first at {list(where)}: {theirs} {expected[where].item()!r}, {mine} {value[where].item()!r}"


def _frame_difference(expected: np.ndarray, value: np.ndarray, labels: tuple[str, str] = ("replayed", "recorded")) -> str:
    if expected.shape != value.shape:
        return f"shape {expected.shape} {labels[1]}, {value.shape} {labels[0]}"
    differing = expected != value
    pixels = differing.any(axis=-1) if differing.ndim == 3 else differing
    return f"{int(pixels.sum())} of {pixels.size} pixels"


def _raised(error: BaseException) -> str:
    return f"the environment raised {type(error).__name__}: {error}"

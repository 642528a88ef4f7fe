"""Minari datasets.

**Dataset ids.** Minari datasets hold one agent. A single-agent recording (an episode with one
agent) goes to ``dataset_id`` exactly as given. A multi-agent recording (PettingZoo) becomes one
dataset per agent: ``[namespace/]name-v<N>`` turns into ``[namespace/]name-<agent>-v<N>`` (characters
other than letters, digits, ``_`` and ``-`` in the agent's name become ``_``), e.g.
``crowdplay/kaz-knight_0-v0``. With ``agent=None`` a dict ``{agent: MinariDataset}`` is returned;
with ``agent`` given only that agent is exported, under ``dataset_id`` unchanged, and the dataset
is returned.

**Spaces.** The observation space is the one the episodes were loaded in
(:meth:`Episode.observation_space`): by default (``observations="env"``) the environment's own,
so a Dict or Tuple space is stored as such (Minari supports them natively) and episodes read back
as dicts/tuples of arrays; ``rgb``/``palette``/``atari84`` give a ``Box(0, 255, shape, uint8)`` of
screens. The action space is ``Discrete(action_count)``.

**Environment.** When the recording names a Gymnasium registration (``env_origin["gymnasium_spec"]``,
with its ``gym.make`` arguments and the wrappers that record theirs) that builds here with the
recorded spaces, it becomes the dataset's ``env_spec``, so ``dataset.recover_environment()``
returns that environment. With ``rgb`` screens it is made to observe its screen (an ALE game with
``obs_type="rgb"``, another environment rendering ``rgb_array`` wrapped in Gymnasium's
``AddRenderObservation``) when that gives the dataset's space; otherwise, and with ``palette`` or
``atari84`` screens, it is the registration as recorded, whose observations are not the
dataset's. No ``env_spec`` (None) for PettingZoo, whose environments have no Gymnasium spec and
which Minari cannot describe, and, with a warning, for an environment that does not build here or
builds with other spaces (a plugin's wrapper that does not record its arguments). Either way the
dataset's metadata keeps ``crowdplay_env_origin`` (the Gymnasium spec JSON or None, the
environment's module, class and PettingZoo name), ``crowdplay_env_id``, ``crowdplay_agent`` and
``crowdplay_observation_format``, and the default description says what was recorded (for
PettingZoo: which environment, which module rebuilds it, and which agent this is).

**Storage.** Minari's ``arrow`` backend, lossless unless ``jpeg_encoding=True``. Minari writes
each episode's Arrow file uncompressed; it is rewritten at once with zstd buffer compression (an
Arrow IPC feature that ``pyarrow`` reads transparently, so stock Minari loads it), before the next
episode is written: peak extra disk use is one uncompressed episode. A whole episode's observations
form one compressed buffer, so a screen compresses against the one before it (the zstd window
covers a previous screen of up to about 1.9 MB at level 3; bigger screens use level 9, 3.9 MB).

**Infos** follow Minari's ``T + 1`` convention (the first entry pairs with the reset observation):
nothing is recorded at reset for the CrowdPlay extras, so ``infos[name][0]`` is zeros and
``infos[name][1:]`` the recorded steps; ``infos["env_info"]`` is the environment's own info as
JSON text, the one ``reset`` returned first. Each Minari episode's metadata names the CrowdPlay
``episode_id``, ``env_id``, ``agent``, ``observation_format`` and ``observation_space``, with the
store document as ``meta``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.exports.common import ID_UNSAFE, agents_of, describe, env_info_texts, jsonable, observation_leaves, progress_bar

if TYPE_CHECKING:
    import gymnasium as gym
    from minari import MinariDataset

#: Bytes of one step's observations above which zstd level 3's 2 MiB window no longer reaches the
#: previous step's; level 9 has a 4 MiB window.
LARGE_STEP_BYTES = 1_900_000


@contextmanager
def _minari_root(data_path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Point Minari at ``data_path`` for the export; Minari only reads its root from the env.

    This sets a process-wide variable, so concurrent exports in threads must share one root.
    """
    if data_path is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = os.fspath(Path(data_path).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def agent_dataset_id(dataset_id: str, agent: str) -> str:
    """The dataset of one agent of a multi-agent recording: ``[namespace/]name-v<N>`` to
    ``[namespace/]name-<agent>-v<N>``."""
    from minari.dataset.minari_dataset import gen_dataset_id, parse_dataset_id

    namespace, name, version = parse_dataset_id(dataset_id)
    return str(gen_dataset_id(namespace, f"{name}-{ID_UNSAFE.sub('_', agent)}", version))


def _minari_infos(infos: Mapping[str, np.ndarray], env_infos: list[str] | None) -> dict[str, Any]:
    """Infos padded to Minari's T + 1 rows with a leading zero row for the unrecorded reset, and
    the environment's own infos as JSON text (reset's first).

    One-dimensional infos go in as lists of NumPy scalars: Minari 0.5.4's arrow backend writes
    an empty shape tag for (T,) arrays and then fails to read it back.
    """
    padded: dict[str, Any] = {}
    for name, values in infos.items():
        values = np.asarray(values)
        values = np.concatenate([np.zeros_like(values[:1]), values])
        padded[name] = list(values) if values.ndim == 1 else values
    if env_infos is not None:
        padded["env_info"] = env_infos
    return padded


def _minari_buffer(episode: Episode, agent: str, trajectory: AgentTrajectory) -> Any:
    """One Minari episode buffer, straight from the recorded arrays (no live env needed)."""
    from minari.data_collector import EpisodeBuffer

    observations = trajectory.observations
    if not isinstance(observations, (dict, tuple)):
        observations = np.asarray(observations)
    return EpisodeBuffer(
        observations=observations,
        actions=np.asarray(trajectory.actions, dtype=np.int64),
        rewards=np.asarray(trajectory.rewards, dtype=np.float64),
        terminations=np.asarray(trajectory.terminations, dtype=bool),
        truncations=np.asarray(trajectory.truncations, dtype=bool),
        infos=_minari_infos(trajectory.infos, env_info_texts(episode, agent, trajectory)) or None,
    )


def _minari_spaces(episode: Episode, agent: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
    """Observation and action spaces as they would have been for a live agent."""
    from gymnasium import spaces

    trajectory = episode.agents[agent]
    if trajectory.action_count <= 0:
        raise ValueError("a Minari export needs the agent's action_count (size of its Discrete space)")
    if trajectory.observations is None:
        raise ValueError("a Minari export needs observations: load the episodes with observations other than None")
    return episode.observation_space(agent), spaces.Discrete(int(trajectory.action_count))


def _built_spaces(spec: Any) -> tuple[gym.Space[Any], gym.Space[Any]]:
    """The observation and action spaces of the environment ``spec`` builds (raises what it raises)."""
    import gymnasium as gym

    env = gym.make(spec)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()  # type: ignore[no-untyped-call]  # gymnasium's Env.close carries no annotations


def _screen_spec(spec: Any) -> Any:
    """``spec`` made to observe its screen: an ALE game with ``obs_type="rgb"``, another
    environment rendering ``rgb_array`` wrapped in Gymnasium's ``AddRenderObservation``; None if
    neither applies."""
    from dataclasses import replace

    from gymnasium.envs.registration import WrapperSpec

    if "obs_type" in spec.kwargs and spec.entry_point.startswith("ale_py"):
        return replace(spec, kwargs={**spec.kwargs, "obs_type": "rgb"})
    if spec.kwargs.get("render_mode") == "rgb_array":
        # Named by hand: the wrapper records its arguments under other names than it takes.
        wrapper = WrapperSpec("AddRenderObservation", "gymnasium.wrappers:AddRenderObservation", {"render_only": True})
        return replace(spec, additional_wrappers=(*spec.additional_wrappers, wrapper))
    return None


def _env_spec(episode: Episode, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> Any:
    """The dataset's ``env_spec``: the recording's Gymnasium registration, if it builds here.

    With the environment's own observations it must build with the recorded spaces, or None (a
    warning says why). With screens: for ``rgb`` the registration made to observe its screen
    (``_screen_spec``) when that builds with the dataset's spaces, so ``recover_environment()``
    sees what the dataset holds; else the registration as recorded (the environment that made
    the screens) if it builds with the recorded action space.
    """
    from gymnasium.envs.registration import EnvSpec

    origin = episode.meta.get("env_origin") or {}
    text = origin.get("gymnasium_spec")
    if not text:
        return None  # PettingZoo, Atari multiplayer, or a plain class: nothing registered
    recorded = EnvSpec.from_json(text)
    candidates = [recorded]
    if episode.observation_format == "rgb" and (screen := _screen_spec(recorded)) is not None:
        candidates.insert(0, screen)
    problems = []
    for spec in candidates:
        try:
            built_observations, built_actions = _built_spaces(spec)
        except Exception as error:  # noqa: BLE001 - whatever a plugin's environment raises
            problems.append(f"does not build here ({type(error).__name__}: {error})")
            continue
        if built_actions != action_space:
            problems.append(f"builds with action space {built_actions}, recorded {action_space}")
        elif built_observations == observation_space or (spec is recorded and episode.observation_format != "env"):
            return spec
        else:
            problems.append(f"builds with observation space {built_observations}, recorded {observation_space} (a wrapper its spec does not record?)")
    warnings.warn(
        f"{episode.env_id}: the recorded Gymnasium environment {recorded.id} {problems[-1]}; the Minari dataset gets "
        "no env_spec (its JSON is kept in the metadata as crowdplay_env_origin)",
        stacklevel=4,
    )
    return None


def _description(episode: Episode, agent: str, has_spec: bool) -> str:
    """What the dataset holds, for Minari's ``description``."""
    origin = episode.meta.get("env_origin") or {}
    agents = list(episode.agents)
    text = f"CrowdPlay human demonstrations in {episode.env_id}, agent {agent}"
    if len(agents) > 1:
        text += f" (one of {', '.join(agents)}: one dataset per agent)"
    text += f"; observations: {episode.observation_format}."
    if origin.get("name") or (len(agents) > 1 and origin.get("module")):
        text += (
            f" Environment: {origin.get('name') or origin.get('class')} ({origin.get('module')}.{origin.get('class')})"
            + (", a PettingZoo environment, which Minari cannot recover: env_spec is None." if len(agents) > 1 else ".")
        )
    elif not has_spec:
        text += " No Gymnasium env_spec: see crowdplay_env_origin in the metadata."
    return text


def _create_minari(
    dataset_id: str,
    episode: Episode,
    agent: str,
    jpeg_encoding: bool,
    dataset_info: dict[str, Any],
) -> MinariDataset:
    """Start a dataset with its first episode, its spaces and environment taken from that episode."""
    import minari

    observation_space, action_space = _minari_spaces(episode, agent)
    shape: tuple[int, ...] = getattr(observation_space, "shape", None) or ()
    if jpeg_encoding and not (
        observation_space.dtype == np.uint8 and (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3))
    ):
        raise ValueError(f"jpeg_encoding needs grayscale or RGB screens (uint8), not {observation_space}")
    spec = _env_spec(episode, observation_space, action_space)
    info = {
        "algorithm_name": "human demonstrations (CrowdPlay)",
        "description": _description(episode, agent, spec is not None),
    } | dataset_info
    with warnings.catch_warnings():
        # Recorded offline: no eval env or code link is expected (nor, for PettingZoo, an env spec),
        # and Minari warns on each.
        warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None).*", category=UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            [_minari_buffer(episode, agent, episode.agents[agent])],
            env=spec,
            observation_space=observation_space,
            action_space=action_space,
            data_format="arrow",
            jpeg_encoding=jpeg_encoding,
            **info,
        )
    dataset.storage.update_metadata(
        {
            "crowdplay_env_id": episode.env_id,
            "crowdplay_agent": agent,
            "crowdplay_observation_format": episode.observation_format,
            "crowdplay_env_origin": jsonable(episode.meta.get("env_origin")),
        }
    )
    return dataset


def _check_minari_fits(dataset: MinariDataset, episode: Episode, agent: str) -> None:
    """Refuse an episode whose spaces or environment differ from the dataset's, rather than store
    garbage or name the wrong environment."""
    observation_space, action_space = _minari_spaces(episode, agent)
    if observation_space != dataset.observation_space or action_space != dataset.action_space:
        raise ValueError(
            f"episode {episode.episode_id}'s spaces {observation_space}, {action_space} differ from dataset "
            f"{dataset.id}'s {dataset.observation_space}, {dataset.action_space}"
        )
    origin = jsonable(episode.meta.get("env_origin"))
    first = dataset.storage.metadata.get("crowdplay_env_origin")
    if origin is not None and first is not None and origin.get("gymnasium_spec") != first.get("gymnasium_spec"):
        raise ValueError(
            f"episode {episode.episode_id} was recorded in another environment ({episode.env_id}, Gymnasium spec "
            f"{origin.get('gymnasium_spec')}) than dataset {dataset.id}'s first episode: export them separately"
        )


def _zstd_level(observations: Any, steps: int) -> int:
    step_bytes = sum(leaf.nbytes for leaf in observation_leaves(observations).values()) // max(steps + 1, 1)
    return 3 if step_bytes <= LARGE_STEP_BYTES else 9


def _compress_episode(dataset: MinariDataset, index: int, level: int) -> None:
    """Rewrite episode ``index``'s Arrow files (as Minari wrote them, uncompressed) with zstd
    compression, through a hidden temporary file that Minari's reader ignores."""
    import pyarrow as pa

    if dataset.storage.FORMAT != "arrow":
        return
    options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=level))
    for path in sorted((Path(dataset.storage.data_path) / str(index)).glob("*.arrow")):
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, reader.schema, options=options) as writer:
                    for batch in range(reader.num_record_batches):
                        writer.write_batch(reader.get_batch(batch))
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


@overload
def export_minari(
    episodes: Iterable[Episode],
    dataset_id: str,
    *,
    agent: str,
    data_path: str | os.PathLike[str] | None = ...,
    progress: bool = ...,
    total: int | None = ...,
    jpeg_encoding: bool = ...,
    **dataset_info: Any,
) -> MinariDataset: ...


@overload
def export_minari(
    episodes: Iterable[Episode],
    dataset_id: str,
    *,
    agent: None = ...,
    data_path: str | os.PathLike[str] | None = ...,
    progress: bool = ...,
    total: int | None = ...,
    jpeg_encoding: bool = ...,
    **dataset_info: Any,
) -> dict[str, MinariDataset]: ...


def export_minari(
    episodes: Iterable[Episode],
    dataset_id: str,
    *,
    agent: str | None = None,
    data_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    total: int | None = None,
    jpeg_encoding: bool = False,
    **dataset_info: Any,
) -> MinariDataset | dict[str, MinariDataset]:
    """Write Minari dataset(s) from recorded episodes, one episode buffer at a time.

    ``dataset_id`` is ``[namespace/]name-v<N>``; see the module docstring for how agents map to
    datasets, which spaces and environment spec they get and how they are compressed. Observations
    are the episodes' as loaded (``Dataset.load(..., observations=...)``; ``env``, the default,
    gives the environment's own). ``data_path`` overrides the Minari root
    (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``) for this call only; load with the
    same root. ``jpeg_encoding`` trades exact pixels for size, for ``(H, W)`` or ``(H, W, 3)``
    screens only (not stacked frames). ``dataset_info`` goes to
    ``minari.create_dataset_from_buffers`` (``author``, ``author_email``, ``code_permalink``,
    ``description``, ``eval_env``, ...).
    Raises ``ValueError`` if a dataset id already exists, an episode's spaces or environment
    disagree with its dataset's, or single- and multi-agent recordings would put one agent into
    two datasets.
    """
    datasets: dict[str, MinariDataset] = {}
    targets: dict[str, str] = {}
    with _minari_root(data_path):
        for episode in progress_bar(episodes, total, progress, "minari"):
            for name, trajectory in agents_of(episode, agent):
                if trajectory.steps == 0:
                    continue
                target = dataset_id if agent is not None or len(episode.agents) == 1 else agent_dataset_id(dataset_id, name)
                if targets.setdefault(name, target) != target:
                    raise ValueError(
                        f"agent {name!r} is in single-agent and multi-agent recordings, which would go to "
                        f"{targets[name]} and {target}: export them separately (filter by env or task)"
                    )
                dataset = datasets.get(name)
                if dataset is None:
                    dataset = datasets[name] = _create_minari(target, episode, name, jpeg_encoding, dataset_info)
                else:
                    _check_minari_fits(dataset, episode, name)
                    dataset.update_dataset_from_buffer([_minari_buffer(episode, name, trajectory)])
                index = dataset.storage.total_episodes - 1
                _compress_episode(dataset, index, _zstd_level(trajectory.observations, trajectory.steps))
                episode_meta = describe(episode, name, trajectory) | {"meta": jsonable(episode.meta)}
                dataset.storage.update_episode_metadata([episode_meta], [index])
    if agent is None:
        return datasets
    if agent not in datasets:
        raise ValueError(f"no episode with steps for agent {agent!r}: nothing to export")
    return datasets[agent]

"""Recorded episodes for research: find, load, replay-check and export them (see ``dataset``)."""

from crowdplay.data.dataset import Dataset, EpisodeNotFound
from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.replay_check import ReplayReport, replay_check

__all__ = ["AgentTrajectory", "Dataset", "Episode", "EpisodeNotFound", "ReplayReport", "replay_check"]

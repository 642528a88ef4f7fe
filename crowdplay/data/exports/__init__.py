"""Dataset exports: recorded episodes as NumPy archives, Minari datasets and RLlib offline data.

Every exporter takes an iterable of :class:`~crowdplay.data.episode.Episode` (a generator that
loads lazily is fine: one episode is held in memory at a time), writes as it goes and shows a
``tqdm`` progress bar on a terminal (``progress=False`` or a non-TTY stderr turns it off; pass
``total`` when the iterable has no ``len``). Episodes with zero steps carry no transition and are
skipped by the Minari and RLlib exports.

Observations are exported as the episodes were loaded (``Dataset.load(..., observations=...)``):
by default (``env``) each agent's own observations in its environment's space, an array, or a
dict/tuple of arrays for a Dict/Tuple space; screens (``rgb``, ``palette``, ``atari84``) only when
asked. Multi-agent recordings give one Minari dataset, one RLlib folder and one npz file per agent.

One module per format: ``npz``, ``minari``, ``rllib``; docs/recording.md ("Exports") has the
overview.
"""

from crowdplay.data.exports.minari import export_minari
from crowdplay.data.exports.npz import export_npz, load_npz
from crowdplay.data.exports.rllib import export_rllib

__all__ = ["export_minari", "export_npz", "export_rllib", "load_npz"]

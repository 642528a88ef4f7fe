"""Dataset exports: recorded episodes as NumPy archives, Minari datasets and RLlib offline data.

Every exporter takes an iterable of :class:`~crowdplay.data.episode.Episode` (a generator that
loads lazily is fine: one episode is held in memory at a time), writes as it goes and shows a
``tqdm`` progress bar on a terminal (``progress=False`` or a non-TTY stderr turns it off; pass
``total`` when the iterable has no ``len``). Episodes with zero steps carry no transition and are
skipped by the Minari and RLlib exports.

One module per format: ``npz``, ``minari``, ``rllib``.
"""

from crowdplay.data.exports.minari import export_minari
from crowdplay.data.exports.npz import export_npz, load_npz
from crowdplay.data.exports.rllib import export_rllib

__all__ = ["export_minari", "export_npz", "export_rllib", "load_npz"]

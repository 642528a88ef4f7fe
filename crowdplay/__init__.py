"""CrowdPlay on Ray: collect human demonstrations in RL environments, live in the browser."""

__version__ = "0.1.0"

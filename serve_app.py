"""The Serve application: ``serve run serve_app:app`` or ``serve deploy serve_config.yaml``."""

from crowdplay.web.ingress import build_app

app = build_app()

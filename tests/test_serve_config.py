"""The Serve entry points: `serve run serve_app:app` and `serve deploy serve_config.yaml`."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parent.parent


def test_serve_app_exports_a_bound_application():
    from ray.serve.deployment import Application

    import serve_app

    assert isinstance(serve_app.app, Application)


def test_serve_config_is_valid_and_points_at_serve_app():
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    (application,) = config.applications
    assert application.import_path == "serve_app:app"
    assert application.route_prefix == "/"
    assert [deployment.name for deployment in application.deployments] == ["Ingress"]

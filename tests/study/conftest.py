"""The study deployment: its own Ray instance and Serve app, with the study of
``tests.study.config`` loaded in every process. Runs in a pytest process of its own (``make
test`` names it), since a study changes the library every other test relies on."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray import serve

from crowdplay.config import Settings, apply_serve_environment, free_port
from crowdplay.manager import get_or_create_manager
from crowdplay.plugins import load_plugins, share_import_path
from crowdplay.web.ingress import build_app

DATA = Path(tempfile.mkdtemp(prefix="crowdplay-study-test-"))
STUDY_SETTINGS = Settings(
    namespace="crowdplay-study-test",
    warm_pool_size=1,
    store_uri=str(DATA / "recordings.db"),
    spool_dir=str(DATA / "spool"),
    plugins="tests.study.config",
    countdown_s=0.5,
)
load_plugins(STUDY_SETTINGS)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return STUDY_SETTINGS


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "0")
    apply_serve_environment()
    share_import_path(str(Path(__file__).parent.parent.parent))
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(STUDY_SETTINGS), name="crowdplay", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def manager(base_url: str):
    return get_or_create_manager(STUDY_SETTINGS)

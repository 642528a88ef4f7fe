"""The study deployment: its own Ray instance and Serve app, with the study of
``tests.study.config`` loaded in every process. Runs in a pytest process of its own (``make
test`` names it), since a study changes the library every other test relies on."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import ray
from ray import serve

from crowdplay.config import Settings
from crowdplay.manager import get_or_create_manager
from crowdplay.plugins import load_plugins
from tests.conftest import TEST_SETTINGS, start_ray, start_serve

DATA = Path(tempfile.mkdtemp(prefix="crowdplay-study-test-"))
STUDY_SETTINGS = replace(
    TEST_SETTINGS,
    namespace="crowdplay-study-test",
    warm_pool_size=1,
    store_uri=str(DATA / "recordings.db"),
    spool_dir=str(DATA / "spool"),
    plugins="tests.study.config",
)
load_plugins(STUDY_SETTINGS)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return STUDY_SETTINGS


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    start_ray()
    yield start_serve(STUDY_SETTINGS)
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def manager(base_url: str):
    return get_or_create_manager(STUDY_SETTINGS)

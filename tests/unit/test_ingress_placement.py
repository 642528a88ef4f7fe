"""Where ingress replicas run: on the head node by default (beside the EnvsManager and the writer),
so a worker cut off takes only its games along; anywhere when ``ingress_on_head`` is off."""

from __future__ import annotations

from dataclasses import replace

from crowdplay.config import LONG_LIVED_RUNTIME_ENV, ON_HEAD_NODE, Settings
from crowdplay.web.ingress import replica_options


def test_replicas_ask_for_the_head_nodes_own_resource_unless_told_otherwise():
    assert replica_options(Settings()) == {"num_cpus": 0, "runtime_env": LONG_LIVED_RUNTIME_ENV, "resources": ON_HEAD_NODE}
    anywhere = replica_options(replace(Settings(), ingress_on_head=False))
    assert "resources" not in anywhere and anywhere["num_cpus"] == 0


def test_the_setting_comes_from_the_environment():
    assert Settings.from_env({"CROWDPLAY_INGRESS_ON_HEAD": "0"}).ingress_on_head is False
    assert Settings.from_env({}).ingress_on_head is True

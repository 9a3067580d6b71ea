"""Resources: custom resources are checked when declared and reach Ray's options."""

from __future__ import annotations

import pytest

from taskloom import ConfigError, Resources, task
from taskloom.dag import Node
from taskloom.executors.ray import ray_options


@pytest.mark.parametrize("amount", [0, -1, "1", None])
def test_custom_amounts_must_be_positive_numbers(amount: object) -> None:
    with pytest.raises(ConfigError, match="custom resource 'ssd'"):
        Resources(custom={"ssd": amount})  # type: ignore[dict-item]


def test_custom_resources_go_to_ray_and_survive_node_limits() -> None:
    @task(executor="ray", resources=Resources(cpu=1, custom={"ssd": 1, "licence": 0.5}))
    def scan() -> None:
        """Needs a node with an SSD and half a licence."""

    assert ray_options(scan)["resources"] == {"ssd": 1, "licence": 0.5}
    limited = Node(scan, gpu_limit=2, memory_limit="1Gi").configured_task()
    assert ray_options(limited)["resources"] == {"ssd": 1, "licence": 0.5}
    assert ray_options(limited)["num_gpus"] == 2


def test_resources_with_custom_stay_hashable() -> None:
    assert hash(Resources(cpu=1, custom={"ssd": 1})) == hash(Resources(cpu=1, custom={"x": 2}))

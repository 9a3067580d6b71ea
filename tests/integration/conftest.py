"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def client(fake: Any) -> AsyncIterator[Any]:
    """A Kubernetes client on the module's fake API server (`fake` fixture)."""
    pytest.importorskip("kubernetes_asyncio")
    from kubernetes_asyncio.client import Configuration

    from taskloom.k8s.client import K8sClient

    k8s = K8sClient(configuration=Configuration(host=fake.url))
    try:
        yield k8s
    finally:
        await k8s.close()

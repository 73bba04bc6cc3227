"""Fixtures: the Kubernetes API test double on a loopback port, and a client of it.

The double (``apidouble.KubeApiDouble``) stands in for a kube-apiserver, which cannot run on this
machine; see its docstring for where it is faithful and where it refuses ("not emulated")."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from switchback.kubernetes.client import KubeClient
from tests.kubernetes.apidouble import KubeApiDouble

NS = "production"


@pytest.fixture
async def double() -> AsyncIterator[KubeApiDouble]:
    d = KubeApiDouble()
    await d.start()
    await d.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def kube(double: KubeApiDouble) -> AsyncIterator[KubeClient]:
    client = KubeClient.connect(NS, server=double.url)
    try:
        yield client
    finally:
        await client.close()

"""Fixtures of the client's tests. The tests that talk to hektor need a real server:
``HEKTOR_URL`` (and ``HEKTOR_API_KEY`` when it runs with ``--api-keys``; the key needs the
read, write and admin scopes). Without ``HEKTOR_URL`` they are skipped, except under
``CI=true``, where that is a failure. They create collections named ``pyclient-<random>``
and drop them when done.

The gRPC tests also need ``HEKTOR_GRPC``, the node's ``--grpc-listen`` address, and
grpcio (``pip install 'hektor-client[grpc]'``); without either they are skipped, except
under ``CI=true``. ``HEKTOR_READ_ONLY_KEY`` (a key with the read scope only) adds the
checks of refusals for a missing scope.

The checks of a write level not reached in time need a second node whose other region
never confirms a write: ``HEKTOR_CUT_OFF_URL`` and ``HEKTOR_CUT_OFF_GRPC``, a ``hektor
serve --region west --mirror-regions east`` with no region ``east`` anywhere (the same
keys as the first); without them those tests are skipped, except under ``CI=true``.

``tests/python_client.rs`` in the repository starts a real ``hektor serve`` (with keys and
a gRPC listener) and runs this suite against it.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterator, List, Optional

import pytest

from hektor_client import Client


def _ci() -> bool:
    return os.environ.get("CI", "") in ("true", "1")


@pytest.fixture(scope="session")
def url() -> str:
    value = os.environ.get("HEKTOR_URL")
    if not value:
        if _ci():
            pytest.fail("CI=true but HEKTOR_URL is not set: these tests need a running hektor")
        pytest.skip("HEKTOR_URL is not set: start `hektor serve` and export HEKTOR_URL=http://127.0.0.1:7070")
    return value


@pytest.fixture(scope="session")
def api_key() -> Optional[str]:
    return os.environ.get("HEKTOR_API_KEY") or None


@pytest.fixture
def client(url: str, api_key: Optional[str]) -> Iterator[Client]:
    with Client(url, api_key, timeout=60.0) as c:
        yield c


def _grpcio() -> bool:
    try:
        import grpc
    except ImportError:
        return False
    return hasattr(grpc, "insecure_channel")  # not a directory that happens to be named grpc


@pytest.fixture(scope="session")
def grpc_address(url: str) -> str:
    """The node's gRPC listener (``HEKTOR_GRPC``), with grpcio importable."""
    value = os.environ.get("HEKTOR_GRPC")
    if not value:
        if _ci():
            pytest.fail("CI=true but HEKTOR_GRPC is not set: the gRPC tests need hektor serve --grpc-listen")
        pytest.skip(
            "HEKTOR_GRPC is not set: start `hektor serve --grpc-listen 127.0.0.1:7071` and export "
            "HEKTOR_GRPC=127.0.0.1:7071"
        )
    if not _grpcio():
        if _ci():
            pytest.fail("CI=true but grpcio cannot be imported: pip install 'hektor-client[grpc]'")
        pytest.skip("grpcio is not installed: pip install 'hektor-client[grpc]'")
    return value


@pytest.fixture
def grpc_client(url: str, api_key: Optional[str], grpc_address: str) -> Iterator[Client]:
    """A client whose searches, batch searches and writes go over gRPC."""
    with Client(url, api_key, timeout=60.0, grpc=grpc_address) as c:
        yield c


def unique_name() -> str:
    return f"pyclient-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def new_collection(client: Client) -> Iterator[Callable[..., str]]:
    """Create a collection with a fresh name (dropped after the test): ``make(dimension,
    **settings)`` returns its name."""
    made: List[str] = []

    def make(dimension: int, **settings: Any) -> str:
        name = unique_name()
        settings.setdefault("partitions", 4)
        result = client.create_collection(name, dimension, **settings)
        assert result.created, result
        made.append(name)
        return name

    yield make
    for name in made:
        client.drop_collection(name, missing_ok=True)


@pytest.fixture(scope="session")
def cut_off_url() -> str:
    """A node whose other region never confirms a write (``HEKTOR_CUT_OFF_URL``): its
    ``quorum`` and ``sync`` writes always time out."""
    value = os.environ.get("HEKTOR_CUT_OFF_URL")
    if not value:
        if _ci():
            pytest.fail("CI=true but HEKTOR_CUT_OFF_URL is not set: the write level tests need a cut-off node")
        pytest.skip(
            "HEKTOR_CUT_OFF_URL is not set: start `hektor serve --region west --mirror-regions east` "
            "(no region east) and export its URL"
        )
    return value


@pytest.fixture
def cut_off(cut_off_url: str, api_key: Optional[str]) -> Iterator[Client]:
    """A client of the cut-off node (over HTTP)."""
    with Client(cut_off_url, api_key, timeout=60.0) as c:
        yield c


@pytest.fixture
def cut_off_grpc(cut_off_url: str, api_key: Optional[str]) -> Iterator[Client]:
    """A client of the cut-off node whose writes go over gRPC (``HEKTOR_CUT_OFF_GRPC``)."""
    value = os.environ.get("HEKTOR_CUT_OFF_GRPC")
    if not value or not _grpcio():
        if _ci():
            pytest.fail("CI=true but HEKTOR_CUT_OFF_GRPC is not set or grpcio is missing")
        pytest.skip("HEKTOR_CUT_OFF_GRPC is not set (the cut-off node's --grpc-listen), or grpcio is missing")
    with Client(cut_off_url, api_key, timeout=60.0, grpc=value) as c:
        yield c

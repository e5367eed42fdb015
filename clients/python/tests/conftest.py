"""Fixtures of the client's tests. The tests that talk to hektor need a real server:
``HEKTOR_URL`` (and ``HEKTOR_API_KEY`` when it runs with ``--api-keys``; the key needs the
read, write and admin scopes). Without ``HEKTOR_URL`` they are skipped, except under
``CI=true``, where that is a failure. They create collections named ``pyclient-<random>``
and drop them when done.

``tests/python_client.rs`` in the repository starts a real ``hektor serve`` (with keys)
and runs this suite against it.
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

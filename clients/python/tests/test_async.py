"""The asyncio client against a real hektor (``HEKTOR_URL``): the same search as the
blocking client, concurrent batches and searches, and the same errors."""

from __future__ import annotations

import asyncio
from typing import Dict, List, Optional

import numpy as np
import pytest

from hektor_client import AsyncClient, HektorError

from conftest import unique_name


def test_async_client_bulk_upsert_and_search(url: str, api_key: Optional[str]) -> None:
    n, dim = 1_200, 24
    rows = np.random.default_rng(21).standard_normal((n, dim)).astype(np.float32)
    name = unique_name()

    async def main() -> None:
        async with AsyncClient(url, api_key, timeout=60.0) as hk:
            assert (await hk.health()).ok
            created = await hk.create_collection(name, dim, partitions=4)
            assert created.created and created.spec.dimension == dim
            try:
                written = await hk.upsert_many(
                    name,
                    [f"v{i}" for i in range(n)],
                    rows,
                    payloads=[{"i": i} for i in range(n)],
                    batch_size=250,
                    concurrency=3,
                )
                assert (written.written, written.batches) == (n, 5)
                assert sorted(written.token) == [0, 1, 2, 3]

                picks = [0, 1, 249, 250, 777, n - 1]
                results = await asyncio.gather(
                    *(hk.search(name, rows[i], k=3, consistency=written) for i in picks)
                )
                for i, result in zip(picks, results):
                    assert result.hits[0].id == f"v{i}", (i, result.hits)
                    assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)
                    assert result.hits[0].payload == {"i": i}

                info = await hk.get_collection(name)
                assert info.vectors == n
                got = await hk.get(name, "v777")
                assert np.array_equal(np.array(got.vector, dtype=np.float32), rows[777])

                deleted = await hk.delete(name, "v777")
                after = await hk.search(name, rows[777], k=3, consistency=deleted)
                assert "v777" not in after.ids

                with pytest.raises(HektorError) as wrong_dim:
                    await hk.search(name, rows[0][:10])
                assert wrong_dim.value.status == 422
                assert "query vector has 10 dimensions" in wrong_dim.value.message
                with pytest.raises(HektorError) as unknown:
                    await hk.upsert(unique_name(), "a", rows[0])
                assert unknown.value.status == 404 and "does not exist" in unknown.value.message
                view = await hk.cluster()
                assert view.collection(name) is not None
            finally:
                assert await hk.drop_collection(name)
            assert name not in [c.name for c in await hk.list_collections()]

    asyncio.run(main())


def test_async_bulk_failure_stops_and_reports_partial(url: str, api_key: Optional[str]) -> None:
    name = unique_name()

    async def main() -> None:
        async with AsyncClient(url, api_key) as hk:
            await hk.create_collection(name, 4, partitions=2)
            try:
                rows = [[1.0, float(i), 0.0, 0.0] for i in range(12)]
                payloads: List[Optional[Dict[str, str]]] = [None] * 12
                payloads[9] = {"big": "x" * 70_000}  # the third batch of four is refused
                with pytest.raises(HektorError) as err:
                    await hk.upsert_many(name, range(12), rows, payloads=payloads, batch_size=4, concurrency=1)
                assert err.value.status == 422 and "payload is" in err.value.message
                assert err.value.partial is not None and err.value.partial.written == 8
                seen = await hk.search(name, [1.0, 7.0, 0.0, 0.0], k=1, consistency=err.value.partial)
                assert seen.ids == ["7"]
            finally:
                await hk.drop_collection(name)

    asyncio.run(main())


def test_async_writes_take_a_write_level(url: str, api_key: Optional[str]) -> None:
    name = unique_name()
    rows = np.random.default_rng(22).standard_normal((3, 4)).astype(np.float32)

    async def main() -> None:
        async with AsyncClient(url, api_key, timeout=60.0) as hk:
            await hk.create_collection(name, 4, partitions=2)
            try:
                written = await hk.upsert_many(name, ["a", "b"], rows[:2], batch_size=1, concurrency=2, replication="sync")
                assert written.batches == 2 and written.regions is not None and len(written.regions) == 1
                assert written.missing == []
                one = await hk.upsert(name, "c", rows[2], replication="quorum", replication_timeout_ms=3_000)
                assert (one.regions, one.missing) == (written.regions, [])
                assert (await hk.delete(name, "a", replication="async")).regions is None
                with pytest.raises(ValueError, match="replication must be one of"):
                    await hk.write(name, deletes=["b"], replication="none")
                with pytest.raises(HektorError) as bad:
                    await hk.delete(name, "b", replication="sync", replication_timeout_ms=0)
                assert bad.value.status == 400
            finally:
                await hk.drop_collection(name)

    asyncio.run(main())

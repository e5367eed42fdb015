"""The client over gRPC against a real hektor (``HEKTOR_URL`` and ``HEKTOR_GRPC``): the
same hits as over HTTP for the same queries (ids, scores to the last bit, payloads),
batch searches alike, writes over gRPC found by searches over both, the same HektorErrors
(status and message) for the same bad calls, auth refusals mapped, no listener a
connection error, and the asyncio client on grpc.aio."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest

from hektor_client import (
    AsyncClient,
    Client,
    Consistency,
    HektorConnectionError,
    HektorError,
    ReplicationTimeout,
    Token,
    Upsert,
    _grpc,
)
from hektor_client import _proto as pb

from conftest import unique_name

NewCollection = Callable[..., str]


def random_rows(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def payload(i: int) -> Dict[str, Any]:
    return {"row": i, "name": f"dôc-{i}", "tags": ["a", "b"][: i % 3], "w": i / 7, "nested": {"ok": i % 2 == 0}}


def test_grpc_and_http_give_identical_hits(client: Client, grpc_client: Client, new_collection: NewCollection) -> None:
    n, dim = 700, 24
    name = new_collection(dim, partitions=3)
    rows = random_rows(n, dim, seed=41)
    tenants = [None if i < 600 else "t1" for i in range(n)]
    written = client.upsert_many(name, [f"r{i}" for i in range(n)], rows, tenant=tenants, payloads=[payload(i) for i in range(n)])
    client.search(name, rows[0], consistency=written)  # every write applied
    queries = np.concatenate([random_rows(12, dim, seed=42), rows[[0, 5, 599, 650]]])

    variants: List[Dict[str, Any]] = [
        {},
        {"with_payload": False},
        {"tenant": "t1"},
        {"k": 1},
        {"k": 60, "effort": 96},
        {"rescore": False},
        {"consistency": Consistency(level="strong")},
        {"consistency": written},
    ]
    for q in queries:
        for kwargs in variants:
            over_http = client.search(name, q, **kwargs)
            over_grpc = grpc_client.search(name, q, **kwargs)
            assert over_grpc.hits == over_http.hits, kwargs
            assert over_grpc.raw["hits"] == over_http.raw["hits"]
            assert (over_grpc.shards, over_grpc.epoch) == (over_http.shards, over_http.epoch)
            assert all(type(h.score) is float for h in over_grpc)
    exact = grpc_client.search(name, rows[5], k=2)
    assert exact.hits[0].id == "r5" and exact.hits[0].payload == payload(5)
    assert exact.hits[0].score == pytest.approx(1.0, abs=1e-4)

    for kwargs in [{}, {"tenant": "t1", "k": 3}, {"with_payload": False, "device": "cpu"}]:
        batch_http = client.search_batch(name, queries, **kwargs)
        batch_grpc = grpc_client.search_batch(name, queries, **kwargs)
        assert batch_grpc.results == batch_http.results, kwargs
        assert len(batch_grpc) == len(queries) == batch_grpc.queries
        assert (batch_grpc.ran_on, batch_grpc.shards, batch_grpc.epoch) == (
            batch_http.ran_on,
            batch_http.shards,
            batch_http.epoch,
        )
        assert batch_http.node and batch_grpc.node is None  # only HTTP's answer names it
    # A batch of one equals the single search's exact answer.
    assert grpc_client.search_batch(name, rows[[5]], k=1)[0][0].id == "r5"


def test_writes_over_grpc_are_searchable(client: Client, grpc_client: Client, new_collection: NewCollection) -> None:
    n, dim = 1_500, 16
    name = new_collection(dim)
    rows = random_rows(n, dim, seed=43)
    written = grpc_client.upsert_many(
        name, [f"g{i}" for i in range(n)], rows, payloads=[payload(i) for i in range(n)], batch_size=500
    )
    assert (written.written, written.batches) == (n, 3)
    assert sorted(written.token) == [0, 1, 2, 3]
    for i in (0, 1, 499, 500, 1_234, n - 1):
        over_grpc = grpc_client.search(name, rows[i], k=3, consistency=written)
        assert over_grpc.hits[0].id == f"g{i}" and over_grpc.hits[0].payload == payload(i)
        over_http = client.search(name, rows[i], k=3, consistency=written)
        assert over_http.hits == over_grpc.hits
    # Stored as sent: the exact float32 values and the payload (a read by id is HTTP's,
    # through the same client).
    stored = grpc_client.get(name, "g777")
    assert np.array_equal(np.array(stored.vector, dtype=np.float32), rows[777])
    assert stored.payload == payload(777)
    assert client.get_collection(name).vectors == n

    # Bodies split by size count the messages' bytes.
    small = grpc_client.upsert_many(name, [f"s{i}" for i in range(100)], rows[:100] * 2, max_body_bytes=2048)
    assert small.written == 100 and small.batches >= 3  # ~75 bytes a row
    assert grpc_client.search(name, rows[42] * 2, k=1, consistency=small).hits[0].id in ("s42", "g42")

    # One upsert with a tenant, a write mixing upserts and deletes, a bulk delete.
    one = grpc_client.upsert(name, "tenanted", rows[3], tenant="t9", payload={"who": "t9"})
    assert one.written == 1 and len(one.token) == 1
    hit = client.search(name, rows[3], k=1, tenant="t9", consistency=one).hits[0]
    assert (hit.id, hit.tenant, hit.payload) == ("tenanted", "t9", {"who": "t9"})
    mixed = grpc_client.write(name, upserts=[Upsert("new", rows[9].tolist(), payload={"n": 1})], deletes=["g9"])
    assert mixed.written == 2
    after = grpc_client.search(name, rows[9], k=2, consistency=mixed)
    assert after.hits[0].id == "new" and "g9" not in after.ids
    gone = grpc_client.delete(name, [f"g{i}" for i in range(10, 20)], batch_size=4)
    assert (gone.written, gone.batches) == (10, 3)
    for i in (10, 15, 19):
        assert f"g{i}" not in client.search(name, rows[i], k=3, consistency=gone).ids
    with pytest.raises(HektorError) as missing:
        client.get(name, "g15")
    assert missing.value.status == 404


def refused(call: Callable[[], object]) -> HektorError:
    with pytest.raises(HektorError) as err:
        call()
    assert not isinstance(err.value, HektorConnectionError), err.value
    return err.value


def same_text(message: str) -> str:
    return re.sub(r"\d+ ms", "N ms", message)  # a wait's measured time differs per call


def test_grpc_errors_are_the_http_errors(client: Client, grpc_client: Client, new_collection: NewCollection) -> None:
    name = new_collection(4)
    missing = unique_name()
    w = client.upsert(name, "a", [1.0, 0.0, 0.0, 0.0])
    ahead = Token({p: o + 1_000_000 for p, o in w.token.items()})
    too_many = [Upsert(str(i), [1.0, 0.0, 0.0, 0.0]) for i in range(10_001)]
    cases: List[Callable[[Client], object]] = [
        lambda c: c.upsert(name, "a", [1.0, 2.0, 3.0]),
        lambda c: c.search(name, [1.0, 2.0, 3.0]),
        lambda c: c.search(missing, [1.0, 0.0, 0.0, 0.0]),
        lambda c: c.upsert(missing, "a", [1.0, 0.0, 0.0, 0.0]),
        lambda c: c.search_batch(missing, [[1.0, 0.0, 0.0, 0.0]]),
        lambda c: c.search(name, [1.0, 0.0, 0.0, 0.0], k=0),
        lambda c: c.search(name, [1.0, 0.0, 0.0, 0.0], k=1001),
        lambda c: c.search(name, [1.0, 0.0, 0.0, 0.0], effort=0),
        lambda c: c.upsert(name, "zero", [0.0, 0.0, 0.0, 0.0]),
        lambda c: c.upsert(name, "x" * 300, [1.0, 0.0, 0.0, 0.0]),
        lambda c: c.upsert(name, "big", [1.0, 0.0, 0.0, 0.0], payload={"big": "x" * 70_000}),
        lambda c: c.write(name, upserts=[Upsert("d", [1, 0, 0, 0])], deletes=["d"]),
        lambda c: c.write(name, upserts=too_many),
        lambda c: c.search_batch(name, [[1.0, 2.0]]),
        lambda c: c.search_batch(name, []),
        lambda c: c.search_batch(name, [[1.0, 0.0, 0.0, 0.0]], k=0),
        lambda c: c.search(name, [1.0, 0.0, 0.0, 0.0], consistency=Consistency(max_staleness=1.0)),
        lambda c: c.search(name, [1.0, 0.0, 0.0, 0.0], consistency=Consistency(after=ahead, timeout=0.3)),
    ]
    statuses = []
    for i, case in enumerate(cases):
        over_http = refused(lambda: case(client))
        over_grpc = refused(lambda: case(grpc_client))
        assert type(over_grpc) is type(over_http) is HektorError
        assert over_grpc.status == over_http.status, (i, over_grpc, over_http)
        assert same_text(over_grpc.message) == same_text(over_http.message), i
        assert over_grpc.grpc_code and over_http.grpc_code is None
        statuses.append(over_grpc.status)
    assert statuses == [422, 422, 404, 404, 404, 422, 422, 422, 422, 422, 422, 422, 413, 422, 422, 422, 422, 504]

    # A name that cannot be a collection: 404 both ways (over gRPC in the server's words
    # about the name).
    bad_name = "not a name!"
    assert refused(lambda: client.search(bad_name, [1.0])).status == 404
    over_grpc = refused(lambda: grpc_client.search(bad_name, [1.0]))
    assert over_grpc.status == 404 and over_grpc.grpc_code == "INVALID_ARGUMENT" and "invalid name" in over_grpc.message

    # A refused batch wrote nothing; a refused later batch of a bulk upsert reports what
    # the earlier ones wrote, as over HTTP.
    assert refused(lambda: client.get(name, "d")).status == 404
    payloads: List[Optional[Dict[str, str]]] = [None] * 10
    payloads[5] = {"big": "x" * 70_000}
    bulk = refused(lambda: grpc_client.upsert_many(name, [f"p{i}" for i in range(10)], [[1.0, float(i), 0.0, 0.0] for i in range(10)], payloads=payloads, batch_size=4))
    assert bulk.status == 422 and "payload is" in bulk.message
    assert bulk.partial is not None and (bulk.partial.written, bulk.partial.batches) == (4, 1)
    assert grpc_client.search(name, [1.0, 2.0, 0.0, 0.0], k=1, consistency=bulk.partial).ids == ["p2"]


def test_grpc_auth_refusals_are_the_http_ones(url: str, api_key: Optional[str], grpc_address: str, new_collection: NewCollection) -> None:
    if api_key is None:
        pytest.skip("the server runs without --api-keys (HEKTOR_API_KEY is not set)")
    name = new_collection(2)
    for key in (None, "not-a-key-of-this-server-1234"):
        with Client(url, key) as over_http, Client(url, key, grpc=grpc_address) as over_grpc:
            for case in (lambda c: c.search(name, [1.0, 0.0]), lambda c: c.upsert(name, "a", [1.0, 0.0])):
                h, g = refused(lambda: case(over_http)), refused(lambda: case(over_grpc))
                assert (g.status, g.grpc_code) == (401, "UNAUTHENTICATED") and h.status == 401
                assert g.message == h.message and g.message
    with Client(url, api_key, grpc=grpc_address) as right:
        written = right.upsert(name, "a", [1.0, 0.0])
        assert right.search(name, [1.0, 0.0], consistency=written).ids == ["a"]


def test_grpc_refuses_a_key_without_the_scope(url: str, grpc_address: str, new_collection: NewCollection) -> None:
    read_only = os.environ.get("HEKTOR_READ_ONLY_KEY")
    if not read_only:
        pytest.skip("HEKTOR_READ_ONLY_KEY (a key with the read scope only) is not set")
    name = new_collection(2)
    with Client(url, read_only) as over_http, Client(url, read_only, grpc=grpc_address) as over_grpc:
        h = refused(lambda: over_http.upsert(name, "a", [1.0, 0.0]))
        g = refused(lambda: over_grpc.upsert(name, "a", [1.0, 0.0]))
        assert h.status == 403 and (g.status, g.grpc_code) == (403, "PERMISSION_DENIED") and g.message == h.message
        assert over_grpc.search(name, [1.0, 0.0]).hits == over_http.search(name, [1.0, 0.0]).hits == []


def test_no_grpc_listener_is_a_connection_error(url: str, api_key: Optional[str], grpc_address: str) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(url, api_key, timeout=5, grpc=f"127.0.0.1:{port}") as c:
        with pytest.raises(HektorConnectionError) as err:
            c.search(unique_name(), [1.0])
        assert err.value.status == 0 and err.value.is_retryable and err.value.grpc_code == "UNAVAILABLE"
        assert c.health().ok  # the rest goes over HTTP


def test_from_env_reads_hektor_grpc(url: str, api_key: Optional[str], grpc_address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEKTOR_URL", url)
    monkeypatch.setenv("HEKTOR_GRPC", grpc_address)
    if api_key:
        monkeypatch.setenv("HEKTOR_API_KEY", api_key)
    with Client.from_env() as c:
        assert c.grpc == grpc_address
        e = refused(lambda: c.search(unique_name(), [1.0]))
        assert e.status == 404 and e.grpc_code == "NOT_FOUND"


def test_async_client_over_grpc(url: str, api_key: Optional[str], grpc_address: str) -> None:
    n, dim = 900, 12
    rows = random_rows(n, dim, seed=44)
    name = unique_name()

    async def main() -> None:
        async with AsyncClient(url, api_key, timeout=60.0) as over_http, AsyncClient(
            url, api_key, timeout=60.0, grpc=grpc_address
        ) as over_grpc:
            await over_grpc.create_collection(name, dim, partitions=4)  # over HTTP
            try:
                written = await over_grpc.upsert_many(
                    name, [f"a{i}" for i in range(n)], rows, payloads=[{"i": i} for i in range(n)], batch_size=200, concurrency=3
                )
                assert (written.written, written.batches) == (n, 5)
                picks = [0, 199, 200, 555, n - 1]
                got = await asyncio.gather(*(over_grpc.search(name, rows[i], k=4, consistency=written) for i in picks))
                want = await asyncio.gather(*(over_http.search(name, rows[i], k=4, consistency=written) for i in picks))
                for i, g, h in zip(picks, got, want):
                    assert g.hits[0].id == f"a{i}" and g.hits[0].payload == {"i": i}
                    assert g.hits == h.hits
                batch = await over_grpc.search_batch(name, rows[picks], k=2)
                assert batch.results == (await over_http.search_batch(name, rows[picks], k=2)).results
                deleted = await over_grpc.delete(name, "a555")
                assert "a555" not in (await over_grpc.search(name, rows[555], k=3, consistency=deleted)).ids

                with pytest.raises(HektorError) as wrong_dim:
                    await over_grpc.search(name, rows[0][:10])
                assert (wrong_dim.value.status, wrong_dim.value.grpc_code) == (422, "INVALID_ARGUMENT")
                assert "query vector has 10 dimensions" in wrong_dim.value.message
                with pytest.raises(HektorError) as unknown:
                    await over_grpc.upsert(unique_name(), "a", rows[0])
                assert unknown.value.status == 404 and "does not exist" in unknown.value.message
            finally:
                assert await over_grpc.drop_collection(name)

    asyncio.run(main())


def test_write_levels_over_grpc_are_the_http_ones(
    client: Client, grpc_client: Client, api_key: Optional[str], new_collection: NewCollection
) -> None:
    dim = 4
    name = new_collection(dim)
    rows = random_rows(8, dim, seed=45)
    over_http = client.upsert(name, "h", rows[0], replication="sync")
    sync = grpc_client.upsert(name, "g", rows[1], replication="sync", replication_timeout_ms=5_000)
    # One region: this one has it, none is missing; the same answer both ways.
    assert sync.regions is not None and len(sync.regions) == 1 and sync.missing == []
    assert (sync.regions, sync.missing) == (over_http.regions, over_http.missing)
    (region,) = sync.regions
    quorum = grpc_client.write(name, [Upsert("q", rows[2])], ["h"], replication="quorum")
    assert (quorum.written, quorum.regions, quorum.missing) == (2, [region], [])
    many = grpc_client.upsert_many(name, [f"m{i}" for i in range(4)], rows[3:7], batch_size=2, replication="sync")
    assert (many.written, many.batches, many.regions, many.missing) == (4, 2, [region], [])
    gone = grpc_client.delete(name, "m0", replication="quorum", replication_timeout_ms=1_000)
    assert (gone.regions, gone.missing) == ([region], [])
    assert grpc_client.upsert(name, "a", rows[7], replication="async").regions is None
    assert grpc_client.upsert(name, "b", rows[7]).regions is None
    assert client.search(name, rows[4], k=1, consistency=many.token | gone.token).ids == ["m1"]
    assert client.get(name, "g").origin == region

    with pytest.raises(ValueError, match="replication must be one of"):
        grpc_client.upsert(name, "x", rows[0], replication="all")
    # The server's 400s, the same both ways: a wait out of range, a level it does not know
    # (sent past the client's check).
    for timeout_ms in (0, 120_001):
        http_error = refused(lambda: client.upsert(name, "x", rows[0], replication="sync", replication_timeout_ms=timeout_ms))
        grpc_error = refused(lambda: grpc_client.upsert(name, "x", rows[0], replication="sync", replication_timeout_ms=timeout_ms))
        assert http_error.status == grpc_error.status == 400 and grpc_error.grpc_code == "INVALID_ARGUMENT"
        assert grpc_error.message == http_error.message and "timeout_ms must be between 1 and 120000" in grpc_error.message
    request = pb.WriteRequest(name, [pb.Upsert("x", [float(v) for v in rows[0]])], [], "eventual").encode()
    bad_level = refused(lambda: grpc_client._send(_grpc.GrpcCall("Write", request, _grpc._parse_write)))
    assert (bad_level.status, bad_level.grpc_code) == (400, "INVALID_ARGUMENT") and "eventual" in bad_level.message
    assert refused(lambda: client.get(name, "x")).status == 404  # nothing refused was written

    async def main() -> None:
        async with AsyncClient(client.url, api_key, grpc=grpc_client.grpc) as hk:
            written = await hk.upsert_many(name, ["c0", "c1"], rows[:2], batch_size=1, concurrency=2, replication="sync")
            assert (written.batches, written.regions, written.missing) == (2, [region], [])
            one = await hk.write(name, deletes=["c0"], replication="quorum", replication_timeout_ms=2_000)
            assert one.regions == [region]

    asyncio.run(main())


def test_a_write_level_not_reached_over_grpc_is_the_http_one(cut_off: Client, cut_off_grpc: Client) -> None:
    name = unique_name()
    assert cut_off.create_collection(name, 4, partitions=2).created
    try:
        rows = random_rows(4, 4, seed=46)
        for i, level in enumerate(("sync", "quorum")):
            with pytest.raises(ReplicationTimeout) as over_http:
                cut_off.upsert(name, f"h-{level}", rows[i], replication=level, replication_timeout_ms=200)
            with pytest.raises(ReplicationTimeout) as over_grpc:
                cut_off_grpc.write(name, [Upsert(f"g-{level}", rows[i + 2])], replication=level, replication_timeout_ms=200)
            h, g = over_http.value, over_grpc.value
            assert (g.status, g.grpc_code, h.grpc_code) == (504, "DEADLINE_EXCEEDED", None) and not g.is_retryable
            assert f"needed for `{level}` did not confirm it within 200 ms" in g.message
            # The regions and the token, read from the status message; `written` is not in it.
            assert (g.regions, g.missing) == (h.regions, h.missing) and len(g.regions or []) == 1
            assert g.token and g.written is None
            assert cut_off_grpc.search(name, rows[i + 2], k=1, consistency=g.token).ids == [f"g-{level}"]
        assert cut_off_grpc.upsert(name, "async", rows[0], replication="async").regions is None
    finally:
        cut_off.drop_collection(name, missing_ok=True)

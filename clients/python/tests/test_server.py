"""The blocking client against a real hektor (``HEKTOR_URL``): every test checks what the
server did, not what the client sent."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest

import hektor_client
from hektor_client import (
    Client,
    Consistency,
    Delete,
    HektorConnectionError,
    HektorError,
    ReplicationTimeout,
    Token,
    Upsert,
    _calls,
)

from conftest import unique_name

NewCollection = Callable[..., str]


def random_rows(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_health_ready_and_metrics(client: Client) -> None:
    health = client.health()
    assert health.ok and health.status == "ok" and health.failing == []
    ready = client.wait_ready(timeout=60)
    assert ready.ready and ready.waiting == [] and ready.failing == []
    assert "hektor_request_seconds" in client.metrics()


def test_a_crdt_collection_merges_payloads_per_field(client: Client) -> None:
    import time

    name = unique_name()
    created = client.create_collection(name, 2, partitions=1, merge="crdt")
    try:
        assert created.spec.merge == "crdt"
        assert client.get_collection(name).settings.merge == "crdt"
        client.upsert(name, "x", [1.0, 0.0], payload={"title": "a", "lang": "en"})
        client.upsert(name, "x", [0.0, 1.0], payload={"lang": "de"})
        deadline = time.monotonic() + 30
        while True:
            try:
                stored = client.get(name, "x")
                if stored.payload == {"title": "a", "lang": "de"}:
                    break
            except HektorError as e:
                assert e.status == 404, e
            assert time.monotonic() < deadline, "the fields never merged"
            time.sleep(0.1)
        assert list(stored.vector) == [0.0, 1.0]
    finally:
        client.drop_collection(name)


def test_create_list_show_drop(client: Client) -> None:
    name = unique_name()
    created = client.create_collection(name, 8, distance="euclidean", partitions=3)
    try:
        assert created.created
        assert (created.spec.name, created.spec.dimension, created.spec.distance) == (name, 8, "euclidean")
        assert (created.spec.partitions, created.spec.replication) == (3, 1)
        # The same settings again: fine, and says it did not create it.
        again = client.create_collection(name, 8, distance="euclidean", partitions=3)
        assert not again.created and again.spec == created.spec
        # Other settings: a 409 with the server's reason.
        with pytest.raises(HektorError) as conflict:
            client.create_collection(name, 16)
        assert conflict.value.status == 409
        assert "already exists" in conflict.value.message

        assert created.spec in client.list_collections()
        info = client.get_collection(name)
        assert info.settings == created.spec
        assert len(info.shards) == 3 and info.vectors == 0
        ends = [s.range.end for s in info.shards]
        starts = [s.range.start for s in info.shards]
        assert starts[0] == 0 and ends[-1] is None and ends[:-1] == starts[1:], "the shards tile the ring"
    finally:
        assert client.drop_collection(name) is True
    assert name not in [c.name for c in client.list_collections()]
    with pytest.raises(HektorError) as gone:
        client.get_collection(name)
    assert gone.value.status == 404 and "does not exist" in gone.value.message
    with pytest.raises(HektorError) as twice:
        client.drop_collection(name)
    assert twice.value.status == 404
    assert client.drop_collection(name, missing_ok=True) is False


def test_bulk_numpy_upsert_then_search_finds_each_exact_vector_first(
    client: Client, new_collection: NewCollection
) -> None:
    n, dim = 2_500, 32
    name = new_collection(dim)
    rows = random_rows(n, dim, seed=7)
    ids = np.array([f"doc-{i}" for i in range(n)])
    written = client.upsert_many(
        name, ids, rows, payloads=[{"row": i, "even": i % 2 == 0} for i in range(n)], batch_size=1_000
    )
    assert written.written == n
    assert written.batches == 3  # 1,000 + 1,000 + 500
    assert sorted(written.token) == [0, 1, 2, 3]  # 2,500 ids touch every partition

    for i in [0, 1, 999, 1_000, 1_777, n - 1] + list(range(5, n, 211)):
        result = client.search(name, rows[i], k=5, consistency=written)
        assert result.hits[0].id == f"doc-{i}", (i, result.hits)
        assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert result.hits[0].payload == {"row": i, "even": i % 2 == 0}
        assert len(result) == 5 and result.shards == 4
        assert all(a.score >= b.score for a, b in zip(result.hits, result.hits[1:])), "best first"

    # Every row landed, and the stored values are the float32 values sent.
    info = client.get_collection(name)
    assert info.complete and info.vectors == n
    stored = client.get(name, "doc-1234")
    assert np.array_equal(np.array(stored.vector, dtype=np.float32), rows[1234])
    assert stored.payload == {"row": 1234, "even": True}
    assert stored.shard is not None and 0 <= stored.shard < 4
    # The winning write: a clock in this millennium (ms << 16), this node's region, alone.
    assert stored.hlc is not None and (stored.hlc >> 16) > 1_600_000_000_000
    assert stored.origin and not stored.concurrent

    # Payloads left out on request.
    bare = client.search(name, rows[3], k=2, with_payload=False, consistency=written)
    assert bare.hits[0].id == "doc-3" and bare.hits[0].payload is None


def test_bulk_upsert_splits_by_body_size_and_every_batch_lands(client: Client, new_collection: NewCollection) -> None:
    n, dim = 300, 64
    name = new_collection(dim)
    rows = random_rows(n, dim, seed=11)
    # ~1.3 KB of JSON a row: 16 KiB bodies hold about 12 rows.
    written = client.upsert_many(name, list(range(n)), rows, max_body_bytes=16 * 1024)
    assert written.written == n and written.batches >= n // 13
    for i in (0, 150, n - 1):
        assert client.search(name, rows[i], k=1, consistency=written).hits[0].id == str(i)
    assert client.get_collection(name).vectors == n


def test_read_your_writes_with_the_write_token(client: Client, new_collection: NewCollection) -> None:
    dim = 16
    name = new_collection(dim)
    base = random_rows(400, dim, seed=3)
    first = client.upsert_many(name, [f"b{i}" for i in range(400)], base)
    token = first.token
    for round_ in range(5):
        probe = random_rows(1, dim, seed=100 + round_)[0]
        one = client.upsert(name, f"probe-{round_}", probe, payload={"round": round_})
        assert one.written == 1 and len(one.token) == 1
        token = token | one.token
        # Straight after the write: the search waits for it and finds it.
        hit = client.search(name, probe, k=1, consistency=one).hits[0]
        assert (hit.id, hit.payload) == (f"probe-{round_}", {"round": round_})
    # The merged token covers every write; a Consistency with an explicit wait works too.
    seen = client.search(name, base[17], k=1, consistency=Consistency(after=token, timeout=30))
    assert seen.hits[0].id == "b17"
    # The server really waits on the token: one past anything written times out (504).
    partition = next(iter(one.token))
    ahead = Token({partition: one.token[partition] + 1_000_000})
    with pytest.raises(HektorError) as late:
        client.search(name, base[0], consistency=Consistency(after=ahead, timeout=0.3))
    assert late.value.status == 504
    assert "consistency wait timed out" in late.value.message
    # Without a token: a strong search sees what was acknowledged before it began.
    probe = random_rows(1, dim, seed=999)[0]
    client.upsert(name, "strong-probe", probe)
    assert client.search(name, probe, k=1, consistency=Consistency(level="strong")).hits[0].id == "strong-probe"
    # A level the server does not know, or a bound without a level that takes one, is refused.
    with pytest.raises(HektorError) as bad:
        client.search(name, probe, consistency=Consistency(max_staleness=1.0))
    assert bad.value.status == 422


def test_errors_are_hektor_errors_with_status_and_message(client: Client, new_collection: NewCollection) -> None:
    name = new_collection(4)
    missing = unique_name()

    def refused(call: Callable[[], object]) -> HektorError:
        with pytest.raises(HektorError) as err:
            call()
        assert not isinstance(err.value, HektorConnectionError)
        return err.value

    e = refused(lambda: client.upsert(name, "a", [1.0, 2.0, 3.0]))
    assert e.status == 422 and "vector has 3 dimensions" in e.message and "has 4" in e.message
    e = refused(lambda: client.search(name, [1.0, 2.0, 3.0]))
    assert e.status == 422 and "query vector has 3 dimensions" in e.message
    e = refused(lambda: client.search(missing, [1.0, 0.0, 0.0, 0.0]))
    assert e.status == 404 and f"collection `{missing}` does not exist" in e.message
    e = refused(lambda: client.upsert(missing, "a", [1.0, 0.0, 0.0, 0.0]))
    assert e.status == 404 and "does not exist" in e.message
    e = refused(lambda: client.get(name, "never-written"))
    assert e.status == 404 and "not found" in e.message
    e = refused(lambda: client.search(name, [1.0, 0.0, 0.0, 0.0], k=0))
    assert e.status == 422 and "k must be between 1 and 1000" in e.message
    e = refused(lambda: client.upsert(name, "zero", [0.0, 0.0, 0.0, 0.0]))
    assert e.status == 422 and "zero vector" in e.message
    e = refused(lambda: client.create_collection("not/a name", 4))
    assert e.status == 400 and "invalid name" in e.message
    e = refused(lambda: client.create_collection(unique_name(), 4, distance="manhattan"))
    assert e.status == 400 and "manhattan" in e.message
    e = refused(lambda: client.write(name, upserts=[Upsert("d", [1, 0, 0, 0])], deletes=["d"]))
    assert e.status == 422 and "twice" in e.message
    too_many = [Upsert(str(i), [1.0, 0.0, 0.0, 0.0]) for i in range(10_001)]
    e = refused(lambda: client.write(name, upserts=too_many))
    assert e.status == 413 and "at most 10000" in e.message
    # A batch is checked whole: nothing of a refused batch was written.
    with pytest.raises(HektorError):
        client.write(name, upserts=[Upsert("ok", [1, 0, 0, 0]), Upsert("bad", [1, 0])])
    assert refused(lambda: client.get(name, "ok")).status == 404


def test_bulk_upsert_failure_reports_what_was_written(client: Client, new_collection: NewCollection) -> None:
    name = new_collection(4)
    rows = random_rows(10, 4, seed=5)
    # Row 5 carries a payload over the server's 64 KiB: the second batch is refused, the
    # first stays written and the error says so.
    payloads: List[Dict[str, object]] = [{"n": i} for i in range(10)]
    payloads[5] = {"big": "x" * 70_000}
    with pytest.raises(HektorError) as err:
        client.upsert_many(name, [f"r{i}" for i in range(10)], rows, payloads=payloads, batch_size=4)
    assert err.value.status == 422 and "payload is" in err.value.message
    partial = err.value.partial
    assert partial is not None and (partial.written, partial.batches) == (4, 1)
    found = client.search(name, rows[2], k=1, consistency=partial)
    assert found.hits[0].id == "r2"
    with pytest.raises(HektorError) as missing:
        client.get(name, "r4")
    assert missing.value.status == 404
    # An unknown collection fails on the first batch: nothing was written.
    with pytest.raises(HektorError) as unknown:
        client.upsert_many(unique_name(), range(10), rows, batch_size=4)
    assert unknown.value.status == 404 and unknown.value.partial is None


def test_delete_removes_the_vector(client: Client, new_collection: NewCollection) -> None:
    name = new_collection(3)
    vectors = {"a": [1.0, 0.0, 0.0], "b": [0.9, 0.1, 0.0], "c": [0.8, 0.2, 0.1]}
    written = client.write(name, upserts=[Upsert(k, v) for k, v in vectors.items()])
    assert written.written == 3
    assert set(client.search(name, [1.0, 0.0, 0.0], k=3, consistency=written).ids) == {"a", "b", "c"}

    deleted = client.delete(name, "b")
    assert deleted.written == 1
    after = client.search(name, [0.9, 0.1, 0.0], k=3, consistency=written.token | deleted.token)
    assert set(after.ids) == {"a", "c"}
    with pytest.raises(HektorError) as gone:
        client.get(name, "b")
    assert gone.value.status == 404
    assert client.get(name, "a").vector == [1.0, 0.0, 0.0]

    # Many ids in several batches, and a delete mixed into a write.
    more = client.upsert_many(name, [f"m{i}" for i in range(7)], [[1.0, float(i), 0.5] for i in range(7)])
    many = client.delete(name, [f"m{i}" for i in range(5)], batch_size=2)
    assert (many.written, many.batches) == (5, 3)
    mixed = client.write(name, upserts=[Upsert("d", [0.0, 0.0, 1.0])], deletes=[Delete("c"), "m6"])
    left = client.search(name, [1.0, 0.0, 0.0], k=10, consistency=more.token | many.token | mixed.token)
    assert set(left.ids) == {"a", "m5", "d"}


def test_tenants_keep_their_own_vectors(client: Client, new_collection: NewCollection) -> None:
    name = new_collection(3)
    w = client.write(
        name,
        upserts=[
            Upsert("x", [1.0, 0.0, 0.0], tenant="t1", payload={"who": "t1"}),
            Upsert("x", [0.0, 1.0, 0.0], tenant="t2", payload={"who": "t2"}),
            {"id": "y", "vector": [0.0, 0.0, 1.0], "tenant": "t2"},
        ],
    )
    # A read by id does not wait for a token (the server has no such option): a search
    # with the token first makes sure the write is applied.
    client.search(name, [1.0, 0.0, 0.0], consistency=w)
    assert client.get(name, "x", tenant="t1").payload == {"who": "t1"}
    got = client.get(name, "x", tenant="t2")
    assert got.vector == [0.0, 1.0, 0.0] and got.tenant == "t2"
    with pytest.raises(HektorError) as untenanted:
        client.get(name, "x")
    assert untenanted.value.status == 404

    only_t1 = client.search(name, [0.0, 1.0, 0.0], k=10, tenant="t1", consistency=w)
    assert [(h.id, h.tenant, h.payload) for h in only_t1] == [("x", "t1", {"who": "t1"})]
    only_t2 = client.search(name, [0.0, 1.0, 0.0], k=10, tenant="t2", consistency=w)
    assert only_t2.ids == ["x", "y"] and {h.tenant for h in only_t2} == {"t2"}
    everyone = client.search(name, [0.0, 1.0, 0.0], k=10, consistency=w)
    assert sorted(everyone.ids) == ["x", "x", "y"]

    # Bulk with one tenant per row, then a tenant's delete leaves the other's vector.
    bulk = client.upsert_many(name, ["z", "z"], [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]], tenant=["t1", "t2"])
    gone = client.delete(name, ["x", "z"], tenant="t1")
    assert gone.written == 2
    assert client.search(name, [1.0, 0.0, 0.0], k=10, tenant="t1", consistency=bulk.token | gone.token).ids == []
    assert client.get(name, "x", tenant="t2").payload == {"who": "t2"}
    assert client.get(name, "z", tenant="t2").vector == [1.0, 0.0, 1.0]


def test_ids_with_path_and_query_characters(client: Client, new_collection: NewCollection) -> None:
    name = new_collection(2)
    odd = ["a/b", "with space", "q?x=1&y", "hash#frag", "pct%2F", "ünïcødé", ".."]
    w = client.upsert_many(name, odd, [[1.0, float(i)] for i in range(len(odd))])
    client.search(name, [1.0, 0.0], k=1, consistency=w)
    for i, id_ in enumerate(odd):
        got = client.get(name, id_)
        assert (got.id, got.vector) == (id_, [1.0, float(i)])
    # Both deletes' tokens: the two ids may lie in different partitions.
    gone = client.delete(name, "a/b").token | client.delete(name, "hash#frag").token
    res = client.search(name, [1.0, 0.0], k=10, consistency=gone)
    assert sorted(res.ids) == sorted(set(odd) - {"a/b", "hash#frag"})


def test_cluster_view_shows_the_collection(client: Client, new_collection: NewCollection) -> None:
    name = new_collection(3, partitions=2)
    w = client.upsert(name, "a", [1.0, 2.0, 3.0])
    client.search(name, [1.0, 2.0, 3.0], consistency=w)
    view = client.cluster()
    assert view.node in view.members and view.members[view.node].alive
    mine = view.collection(name)
    assert mine is not None and (mine.partitions, mine.replication) == (2, 1)
    assert sorted(s.shard for s in mine.shards) == [0, 1]
    assert sum(s.vectors or 0 for s in mine.shards) == 1
    assert all(view.node in s.replicas for s in mine.shards) or len(view.members) > 1


def test_numpy_is_optional(url: str, api_key: Optional[str], new_collection: NewCollection) -> None:
    """The client imports and works with plain lists where numpy cannot be imported."""
    name = new_collection(3)
    script = textwrap.dedent(
        """
        import sys
        sys.modules["numpy"] = None  # `import numpy` now fails
        import hektor_client as hk
        c = hk.Client(sys.argv[1], sys.argv[2] or None)
        w = c.upsert_many(sys.argv[3], ["p", "q"], [[1, 0, 0], [0.0, 1.0, 0.5]], payloads=[{"n": 1}, None])
        hits = c.search(sys.argv[3], (0, 1, 0.5), k=1, consistency=w)
        assert "numpy" not in sys.modules or sys.modules["numpy"] is None
        print(hits.hits[0].id, w.written)
        """
    )
    env = os.environ.copy()
    here = os.path.dirname(os.path.dirname(os.path.abspath(hektor_client.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-c", script, url, api_key or "", name],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["q", "2"]


def test_api_key_is_sent_as_the_server_expects(url: str, api_key: Optional[str]) -> None:
    if api_key is None:
        pytest.skip("the server runs without --api-keys (HEKTOR_API_KEY is not set)")
    with Client(url) as anonymous:
        assert anonymous.health().ok  # /health is open to all
        with pytest.raises(HektorError) as missing:
            anonymous.list_collections()
        assert missing.value.status == 401
    with Client(url, "not-a-key-of-this-server-1234") as wrong:
        with pytest.raises(HektorError) as unknown:
            wrong.list_collections()
        assert unknown.value.status == 401 and unknown.value.message
    with Client(url, api_key) as right:
        assert isinstance(right.list_collections(), list)


def test_no_server_is_a_connection_error() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", timeout=5) as c:
        with pytest.raises(HektorConnectionError) as err:
            c.health()
    assert err.value.status == 0 and err.value.is_retryable


def test_write_levels_name_the_regions_that_have_the_write(client: Client, new_collection: NewCollection) -> None:
    dim = 4
    name = new_collection(dim)
    rows = random_rows(8, dim, seed=77)
    # One region: a sync write is applied everywhere as soon as it is durable here.
    sync = client.upsert(name, "s", rows[0], replication="sync", replication_timeout_ms=5_000)
    assert sync.written == 1 and sync.regions is not None and len(sync.regions) == 1 and sync.missing == []
    (region,) = sync.regions
    # The region named is this node's, the one stamped on the write.
    assert client.search(name, rows[0], k=1, consistency=sync).ids == ["s"]
    assert client.get(name, "s").origin == region
    quorum = client.write(name, [Upsert("q", rows[1])], ["s"], replication="quorum")
    assert (quorum.written, quorum.regions, quorum.missing) == (2, [region], [])
    many = client.upsert_many(name, [f"m{i}" for i in range(4)], rows[2:6], batch_size=2, replication="sync")
    assert (many.written, many.batches, many.regions, many.missing) == (4, 2, [region], [])
    gone = client.delete(name, ["q", "m0"], replication="quorum", replication_timeout_ms=1_000)
    assert (gone.regions, gone.missing) == ([region], [])
    # An async write (asked for, or the collection's default) names no regions.
    assert client.upsert(name, "a", rows[6], replication="async").regions is None
    assert client.upsert(name, "b", rows[7]).regions is None
    found = client.search(name, rows[3], k=1, consistency=many.token | gone.token)
    assert found.ids == ["m1"]

    # A level the client does not know is refused before anything is sent.
    with pytest.raises(ValueError, match="replication must be one of"):
        client.upsert(name, "x", rows[0], replication="eventual")
    # What only the server judges is its 400: a wait out of range ...
    for timeout_ms in (0, 120_001):
        with pytest.raises(HektorError) as bad:
            client.upsert(name, "x", rows[0], replication="sync", replication_timeout_ms=timeout_ms)
        assert bad.value.status == 400 and "timeout_ms must be between 1 and 120000" in bad.value.message
    # ... and a bad level sent past the client's check.
    call = dataclasses.replace(
        _calls.write_items(name, [_calls.encode_upsert("x", rows[0])]), params={"replication": "eventual"}
    )
    with pytest.raises(HektorError) as bad:
        client._send(call)
    assert bad.value.status == 400 and "eventual" in bad.value.message
    with pytest.raises(HektorError) as missing:
        client.get(name, "x")  # nothing refused was written
    assert missing.value.status == 404


def test_a_write_level_not_reached_is_a_replication_timeout(cut_off: Client) -> None:
    # The cut-off node's other region never confirms: its quorum and sync writes time out.
    name = unique_name()
    assert cut_off.create_collection(name, 4, partitions=2).created
    try:
        rows = random_rows(6, 4, seed=78)
        for i, level in enumerate(("sync", "quorum")):
            with pytest.raises(ReplicationTimeout) as late:
                cut_off.upsert(name, level, rows[i], replication=level, replication_timeout_ms=200)
            error = late.value
            assert error.status == 504 and error.grpc_code is None and not error.is_retryable
            assert f"needed for `{level}` did not confirm it within 200 ms" in error.message
            assert error.written == 1 and error.token
            assert error.regions is not None and error.missing is not None
            assert len(error.regions) == 1 and len(error.missing) == 1 and error.regions != error.missing
            # Durable here all the same: a search with its token finds it, written by the
            # region the error says has it.
            assert cut_off.search(name, rows[i], k=1, consistency=error.token).ids == [level]
            assert cut_off.get(name, level).origin == error.regions[0]
        # Several batches: the first that times out stops the rest; nothing before it.
        with pytest.raises(ReplicationTimeout) as late:
            cut_off.upsert_many(name, ["m0", "m1", "m2"], rows[2:5], batch_size=2, replication="sync", replication_timeout_ms=100)
        assert late.value.partial is None and late.value.written == 2
        # An async write does not wait for the other region.
        assert cut_off.upsert(name, "async", rows[5], replication="async").regions is None
    finally:
        cut_off.drop_collection(name, missing_ok=True)

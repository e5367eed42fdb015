"""What the client sends, checked without a server: batching within the server's
limits, tokens, inputs refused before anything is sent, and write levels (what a write
asks for, the regions its answer names, a 504 not replicated in time) through a fake
HTTP transport."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from hektor_client import (
    AsyncClient,
    Client,
    Consistency,
    HektorError,
    ReplicationTimeout,
    Token,
    Upsert,
    WriteResult,
)
from hektor_client import _calls


def bodies(calls: object) -> list:  # type: ignore[type-arg]
    return [json.loads(c.body) for c in calls]  # type: ignore[attr-defined]


def test_tokens_merge_to_the_highest_offset_per_partition() -> None:
    a = Token({"3": 41, "7": 9})
    b = Token({3: 40, 1: 5})
    merged = a | b
    assert dict(merged) == {1: 5, 3: 41, 7: 9}
    assert merged.to_json() == {"1": 5, "3": 41, "7": 9}
    assert a.merge(b, {7: 10}) == {1: 5, 3: 41, 7: 10}
    with pytest.raises(ValueError):
        Token({0: -1})
    total = WriteResult(a, 2).merge(WriteResult(b, 3))
    assert (dict(total.token), total.written, total.batches) == ({1: 5, 3: 41, 7: 9}, 5, 2)


def test_search_body_carries_the_token_and_wait() -> None:
    call = _calls.search("c", [1, 2], 5, "t", WriteResult(Token({2: 7}), 1), False, 64, False, None, 30.0)
    body = json.loads(call.body)  # type: ignore[arg-type]
    assert body == {
        "vector": [1.0, 2.0],
        "k": 5,
        "tenant": "t",
        "consistency": {"after": {"2": 7}},
        "without_payload": True,
        "effort": 64,
        "rescore": False,
    }
    waited = _calls.search("c", [1], 1, None, Consistency(Token({0: 1}), timeout=60), True, None, None, None, 30.0)
    assert json.loads(waited.body)["consistency"] == {"after": {"0": 1}, "timeout_ms": 60000}  # type: ignore[arg-type]
    assert waited.timeout is not None and waited.timeout >= 65  # the HTTP wait outlasts the server's
    strong = _calls.search("c", [1], 1, None, Consistency(level="strong", timeout=60), True, None, None, None, 30.0)
    assert json.loads(strong.body)["consistency"] == {"level": "strong", "timeout_ms": 60000}  # type: ignore[arg-type]
    assert strong.timeout is not None and strong.timeout >= 65
    bounded = Consistency(level="bounded", max_staleness=1.5).to_json()
    assert bounded == {"level": "bounded", "max_staleness_ms": 1500}
    with pytest.raises(ValueError):
        Consistency(level="linearizable").to_json()


def test_bulk_batches_stay_within_count_and_size() -> None:
    rows = [[float(i), 1.0, 2.0] for i in range(25)]
    calls = list(_calls.upsert_batches("c", range(25), rows, None, None, 10, _calls.MAX_BODY_BYTES))
    assert [len(b["upserts"]) for b in bodies(calls)] == [10, 10, 5]
    assert [u["id"] for b in bodies(calls) for u in b["upserts"]] == [str(i) for i in range(25)]

    calls = list(_calls.upsert_batches("c", range(25), rows, "t", None, 10_000, 1024))
    assert len(calls) > 1 and all(len(c.body) <= 1024 for c in calls)  # type: ignore[arg-type]
    assert sum(len(b["upserts"]) for b in bodies(calls)) == 25
    assert all(u["tenant"] == "t" for b in bodies(calls) for u in b["upserts"])


def test_numpy_rows_are_sent_as_exact_float32_values() -> None:
    np = pytest.importorskip("numpy")
    rows = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
    (call,) = _calls.upsert_batches("c", np.arange(7), rows, None, None, 100, _calls.MAX_BODY_BYTES)
    sent = np.array([u["vector"] for u in json.loads(call.body)["upserts"]], dtype=np.float32)  # type: ignore[arg-type]
    assert np.array_equal(sent, rows)
    with pytest.raises(ValueError, match="row 3"):
        bad = rows.copy()
        bad[3, 2] = np.nan
        list(_calls.upsert_batches("c", np.arange(7), bad, None, None, 100, _calls.MAX_BODY_BYTES))
    with pytest.raises(ValueError, match="2-D"):
        list(_calls.upsert_batches("c", [1], rows[0], None, None, 100, _calls.MAX_BODY_BYTES))


def test_bad_bulk_input_is_refused_before_any_call() -> None:
    rows = [[1.0, 2.0]] * 3
    with pytest.raises(ValueError, match="2 ids for 3 vectors"):
        _calls.upsert_batches("c", ["a", "b"], rows, None, None, 10, _calls.MAX_BODY_BYTES)
    with pytest.raises(ValueError, match="twice"):
        _calls.upsert_batches("c", ["a", "b", "a"], rows, None, None, 10, _calls.MAX_BODY_BYTES)
    # The same id under two tenants is two vectors.
    _calls.upsert_batches("c", ["a", "a", "b"], rows, ["t1", "t2", None], None, 10, _calls.MAX_BODY_BYTES)
    with pytest.raises(ValueError, match="between 1 and 10000"):
        _calls.upsert_batches("c", ["a", "b", "c"], rows, None, None, 10_001, _calls.MAX_BODY_BYTES)
    with pytest.raises(ValueError, match="row 1 has 1 values"):
        _calls.upsert_batches("c", ["a", "b"], [[1.0, 2.0], [3.0]], None, None, 10, _calls.MAX_BODY_BYTES)
    with pytest.raises(ValueError, match="not a finite"):
        _calls.upsert_batches("c", ["a"], [[1.0, math.inf]], None, None, 10, _calls.MAX_BODY_BYTES)


def test_paths_are_percent_encoded() -> None:
    call = _calls.get_vector("docs", "a/b c?#", "t 1")
    assert call.path == "/collections/docs/vectors/a%2Fb%20c%3F%23" and call.params == {"tenant": "t 1"}
    assert _calls.delete_batches("c", 5, None, 10).__next__().body == b'{"upserts":[],"deletes":["5"]}'


# ----- write levels (replication=) -----


def test_write_levels_travel_in_the_query() -> None:
    sync = _calls.write_options("sync", 2500)
    call = _calls.upsert_one("c", "a", [1.0], None, None, options=sync)
    assert call.params == {"replication": "sync", "timeout_ms": "2500"} and call.wait == 2.5
    assert json.loads(call.body) == {"upserts": [{"id": "a", "vector": [1.0]}], "deletes": []}  # type: ignore[arg-type]
    quorum = _calls.write_options("quorum")
    (batch,) = _calls.delete_batches("c", ["a", "b"], None, 10, options=quorum)
    assert batch.params == {"replication": "quorum"} and batch.wait == _calls.DEFAULT_REPLICATION_WAIT_S
    calls = list(_calls.upsert_batches("c", range(5), [[1.0]] * 5, None, None, 2, _calls.MAX_BODY_BYTES, options=sync))
    assert len(calls) == 3 and all(c.params == {"replication": "sync", "timeout_ms": "2500"} for c in calls)
    mixed = _calls.write_batch("c", [{"id": "u", "vector": [1.0]}], ["d"], options=_calls.write_options("async", 7))
    assert mixed.params == {"replication": "async", "timeout_ms": "7"} and mixed.wait is None  # async waits for no one
    # Nothing asked: no query, no wait (the collection's level decides).
    plain = _calls.upsert_one("c", "a", [1.0], None, None)
    assert plain.params is None and plain.wait is None
    # A timeout alone may still wait (the collection's level may be sync).
    assert _calls.write_options(None, 40_000).wait() == 40.0


def test_bad_write_levels_are_refused_before_anything_is_sent() -> None:
    for bad in ("SYNC", "eventual", "", 2, True):
        with pytest.raises(ValueError, match="replication must be one of async, quorum, sync"):
            _calls.write_options(bad)  # type: ignore[arg-type]
    for bad_type in (1.5, "100", True):
        with pytest.raises(TypeError, match="replication_timeout_ms"):
            _calls.write_options("sync", bad_type)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        _calls.write_options("sync", -1)
    # The range (1 to 120,000) is the server's to judge: 0 and 10**6 are sent as they are.
    assert _calls.write_options("sync", 0).params() == {"replication": "sync", "timeout_ms": "0"}
    assert _calls.write_options(None, 10**6).timeout_ms == 10**6


def test_write_results_name_the_regions() -> None:
    answer = {"token": {"1": 4}, "written": 2, "replicated": {"regions": ["west", "east"], "missing": ["north"]}}
    result = _calls._write_result(200, answer)
    assert (dict(result.token), result.written, result.regions, result.missing) == ({1: 4}, 2, ["west", "east"], ["north"])
    bare = _calls._write_result(200, {"token": {"0": 1}, "written": 1})
    assert bare.regions is None and bare.missing is None
    # Over batches: the regions that have every batch, those that lack one.
    merged = result.merge(WriteResult(Token({2: 1}), 1, 1, ["west"], ["east"]))
    assert (merged.regions, merged.missing, merged.batches) == (["west"], ["north", "east"], 2)
    assert WriteResult(Token(), 1).merge(WriteResult(Token(), 1)).regions is None
    assert WriteResult(Token(), 1).merge(result).regions == ["west", "east"]


def test_a_write_not_replicated_in_time_is_a_replication_timeout() -> None:
    body = {
        "error": "the write is durable in region `west` but 1 of the 1 other regions needed for `sync` did not confirm it within 50 ms: ...",
        "token": {"0": 12, "3": 4},
        "written": 3,
        "replicated": {"regions": ["west"], "missing": ["east"]},
    }
    error = _calls.error_from(504, json.dumps(body).encode(), {}, "POST", "http://h/collections/c/vectors")
    assert isinstance(error, ReplicationTimeout) and isinstance(error, HektorError)
    assert (error.status, error.message) == (504, body["error"])
    assert dict(error.token or {}) == {0: 12, 3: 4} and error.written == 3
    assert (error.regions, error.missing) == (["west"], ["east"])
    assert not error.is_retryable and error.body == body
    # A 504 without `replicated` (the log did not answer, a consistency wait) stays a
    # plain HektorError, retryable.
    other = _calls.error_from(504, b'{"error":"the log did not answer in time"}', {}, "POST", "u")
    assert type(other) is HektorError and other.is_retryable


def fake_server(answers: "list[tuple[int, dict]]", seen: list) -> httpx.MockTransport:  # type: ignore[type-arg]
    """An HTTP transport answering each request with the next (status, JSON body), and
    keeping the requests."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


def test_clients_send_write_levels_and_read_the_regions() -> None:
    seen: list = []  # type: ignore[type-arg]
    ok = {"token": {"0": 5}, "written": 1, "replicated": {"regions": ["local"], "missing": []}}
    with Client("http://h", timeout=3.0, transport=fake_server([(200, ok)], seen)) as hk:
        written = hk.upsert("c", "a", [1.0], replication="sync", replication_timeout_ms=20_000)
        assert (written.regions, written.missing, dict(written.token)) == (["local"], [], {0: 5})
        hk.write("c", [Upsert("b", [2.0])], ["z"], replication="quorum")
        hk.delete("c", ["a", "b"], replication="async")
        many = hk.upsert_many("c", ["x", "y", "w"], [[1.0], [2.0], [3.0]], batch_size=2, replication="sync")
        assert many.batches == 2 and many.regions == ["local"] and many.missing == []
        hk.upsert("c", "plain", [1.0])
        with pytest.raises(ValueError, match="replication must be one of"):
            hk.upsert("c", "a", [1.0], replication="all")
        with pytest.raises(ValueError, match="replication must be one of"):
            hk.upsert_many("c", ["a"], [[1.0]], replication="strong")
    queries = [dict(r.url.params) for r in seen]
    assert queries == [
        {"replication": "sync", "timeout_ms": "20000"},
        {"replication": "quorum"},
        {"replication": "async"},
        {"replication": "sync"},
        {"replication": "sync"},
        {},
    ]
    assert all(r.url.path == "/collections/c/vectors" and r.method == "POST" for r in seen)
    # The request outlasts the server's wait: 20 s + 5 s, not the client's 3 s.
    assert seen[0].extensions["timeout"]["read"] == 25.0
    assert seen[1].extensions["timeout"]["read"] == _calls.DEFAULT_REPLICATION_WAIT_S + 5.0
    assert seen[2].extensions["timeout"]["read"] == 3.0 and seen[5].extensions["timeout"]["read"] == 3.0


def test_clients_raise_replication_timeout_with_what_was_written() -> None:
    late = {
        "error": "the write is durable in region `west` but 1 of the 2 other regions needed for `quorum` did not confirm it within 10 ms",
        "token": {"2": 9},
        "written": 1,
        "replicated": {"regions": ["west"], "missing": ["east", "north"]},
    }
    ok = {"token": {"0": 5}, "written": 2, "replicated": {"regions": ["west", "east", "north"], "missing": []}}
    seen: list = []  # type: ignore[type-arg]
    with Client("http://h", transport=fake_server([(200, ok), (504, late)], seen)) as hk:
        with pytest.raises(ReplicationTimeout) as raised:
            hk.upsert_many("c", ["a", "b", "c"], [[1.0]] * 3, batch_size=2, replication="quorum", replication_timeout_ms=10)
    error = raised.value
    assert (error.status, dict(error.token or {}), error.written) == (504, {2: 9}, 1)
    assert (error.regions, error.missing) == (["west"], ["east", "north"])
    # The batch before it is in `partial`, as for any failed batch; nothing was retried.
    assert error.partial is not None and dict(error.partial.token) == {0: 5} and error.partial.regions == ["west", "east", "north"]
    assert len(seen) == 2

    async def run() -> None:
        seen.clear()
        transport = fake_server([(504, late)], seen)
        async with AsyncClient("http://h", transport=transport) as hk:
            with pytest.raises(ReplicationTimeout) as raised:
                await hk.write("c", [Upsert("a", [1.0])], replication="sync", replication_timeout_ms=10)
            assert raised.value.missing == ["east", "north"]
            with pytest.raises(ValueError):
                await hk.delete("c", "a", replication="Sync")
        assert [dict(r.url.params) for r in seen] == [{"replication": "sync", "timeout_ms": "10"}]

    asyncio.run(run())

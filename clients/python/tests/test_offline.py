"""What the client sends, checked without a server: batching within the server's
limits, tokens, and inputs refused before anything is sent."""

from __future__ import annotations

import json
import math

import pytest

from hektor_client import Consistency, Token, WriteResult
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

"""The gRPC path checked without a server: the hand-written protobuf codec (``_proto``)
against hand-computed bytes, round trips of every message of hektor.proto, unknown fields
skipped; what the gRPC calls send and how their answers become the HTTP path's objects;
the mapping of gRPC codes to HTTP statuses; and the error a client asking for gRPC gets
without grpcio. Needs neither grpcio nor a server."""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import types
from typing import Any, Dict

import pytest

from hektor_client import (
    Client,
    Consistency,
    Delete,
    HektorConnectionError,
    HektorError,
    ReplicationTimeout,
    Token,
    Upsert,
    WriteResult,
    _calls,
    _grpc,
)
from hektor_client import _proto as pb

PROTO = os.path.join(os.path.dirname(__file__), "..", "..", "..", "grpc", "proto", "hektor.proto")


def f32(x: float) -> bytes:
    return struct.pack("<f", x)


# ----- the codec against hand-computed bytes -----


def test_varints() -> None:
    for value, encoded in [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ]:
        out = bytearray()
        pb.encode_varint(value, out)
        assert bytes(out) == encoded, value
        assert pb.decode_varint(encoded, 0) == (value, len(encoded))
        assert pb.varint_size(value) == len(encoded)
    with pytest.raises(ValueError):
        pb.encode_varint(-1, bytearray())
    with pytest.raises(ValueError):
        pb.encode_varint(2**64, bytearray())
    with pytest.raises(pb.DecodeError, match="truncated"):
        pb.decode_varint(b"\x80\x80", 0)
    with pytest.raises(pb.DecodeError):
        pb.decode_varint(b"\xff" * 10 + b"\x01", 0)


def test_search_request_bytes() -> None:
    request = pb.SearchRequest(collection="c", vector=[1.0, 2.0], k=5)
    assert request.encode() == (
        b"\x0a\x01c"  # 1: collection, length-delimited
        + b"\x12\x08" + f32(1.0) + f32(2.0)  # 2: packed floats, 8 bytes
        + b"\x18\x05"  # 3: k = 5
    )
    # Defaults of plain fields are left out; optional ones are sent even at their
    # default; a present message is sent even when empty.
    full = pb.SearchRequest(
        collection="",
        vector=[],
        k=0,
        tenant="",
        without_payload=True,
        effort=None,
        rescore=False,
        consistency=pb.Consistency(),
    )
    assert full.encode() == b"\x18\x00" + b"\x22\x00" + b"\x28\x01" + b"\x38\x00" + b"\x42\x00"
    assert pb.SearchRequest().encode() == b""


def test_consistency_and_map_bytes() -> None:
    message = pb.Consistency(level="strong", max_staleness_ms=1500, after={2: 300, 0: 1}, timeout_ms=0)
    assert message.encode() == (
        b"\x0a\x06strong"
        + b"\x10\xdc\x0b"  # 2: 1500
        + b"\x1a\x04\x08\x00\x10\x01"  # 3: entry {key 0, value 1} (keys in order)
        + b"\x1a\x05\x08\x02\x10\xac\x02"  # 3: entry {key 2, value 300}
        + b"\x20\x00"  # 4: an optional 0 is sent
    )
    assert pb.Consistency.decode(message.encode()) == message
    # Entries with a key or value left out (as prost writes zeros) read as 0.
    assert pb.Consistency.decode(b"\x1a\x02\x10\x07" + b"\x1a\x02\x08\x03").after == {0: 7, 3: 0}


def test_write_request_bytes() -> None:
    upsert = pb.Upsert(id="a", vector=[0.5], payload_json='{"x":1}')
    assert upsert.encode() == b"\x0a\x01a" + b"\x12\x04" + f32(0.5) + b'\x22\x07{"x":1}'
    delete = pb.Delete(id="b", tenant="t")
    assert delete.encode() == b"\x0a\x01b\x12\x01t"
    request = pb.WriteRequest(collection="docs", upserts=[upsert], deletes=[delete.encode()])
    assert request.encode() == (
        b"\x0a\x04docs" + b"\x12\x12" + upsert.encode() + b"\x1a\x06" + delete.encode()
    )
    assert pb.WriteRequest.decode(request.encode()) == pb.WriteRequest("docs", [upsert], [delete])
    assert _grpc.ProtoWrites.overhead("docs") == 6
    assert _grpc.ProtoWrites.item_size(upsert.encode()) == 2 + 18


def test_answers_decode_and_unknown_fields_are_skipped() -> None:
    hit = b"\x0a\x01x" + b"\x15" + f32(0.5) + b'\x1a\x07{"a":1}'
    unknown = (
        b"\x48\x96\x01"  # 9: varint
        + b"\x51" + b"\x01" * 8  # 10: 64-bit
        + b"\x5a\x03abc"  # 11: length-delimited
        + b"\x65" + b"\x02" * 4  # 12: 32-bit
        + b"\x6b" + b"\x08\x01" + b"\x12\x00" + b"\x6c"  # 13: a group holding two fields
    )
    answer = b"\x0a" + bytes([len(hit)]) + hit + unknown + b"\x10\x03" + b"\x18\x07" + b"\x20\xe8\x07"
    decoded = pb.SearchResponse.decode(answer)
    assert decoded == pb.SearchResponse(hits=[pb.Hit("x", 0.5, '{"a":1}')], shards=3, epoch=7, took_us=1000)
    # Unknown fields inside a nested message too.
    assert pb.Hit.decode(unknown + hit + unknown) == pb.Hit("x", 0.5, '{"a":1}')

    token = b"\x0a\x04\x08\x00\x10\x33" + b"\x0a\x09\x08\x07\x10\x80\x80\x80\x80\x80\x20" + b"\x10\x03"
    assert pb.WriteResponse.decode(unknown + token) == pb.WriteResponse(token={0: 51, 7: 2**40}, written=3)
    # A scalar seen twice: the last wins.
    assert pb.WriteResponse.decode(b"\x10\x01\x10\x02").written == 2


def test_decode_takes_unpacked_floats_and_merges_a_repeated_singular_message() -> None:
    assert pb.Vector.decode(b"\x0d" + f32(1.0) + b"\x0d" + f32(-2.0)).values == [1.0, -2.0]
    assert pb.Vector.decode(b"\x0a\x04" + f32(1.0) + b"\x0a\x04" + f32(3.0)).values == [1.0, 3.0]
    twice = b"\x42\x04\x0a\x02ab" + b"\x42\x02\x20\x05"
    assert pb.SearchRequest.decode(twice).consistency == pb.Consistency(level="ab", timeout_ms=5)


def test_bad_bytes_are_decode_errors() -> None:
    for data, why in [
        (b"\x0a\x05ab", "past the end"),  # a string longer than what is left
        (b"\x08\x01", "wire type"),  # collection (a string) as a varint
        (b"\x0a\x02\xff\xfe", "UTF-8"),
        (b"\x00\x01", "field number 0"),
        (b"\x12\x03\x00\x00\x80", "multiple of 4"),
        (b"\x5f", "wire type 7"),
        (b"\x6b\x08\x01", "truncated"),  # a group that never ends
    ]:
        with pytest.raises(pb.DecodeError, match=why):
            pb.SearchRequest.decode(data)


def sample(name: str) -> pb.Message:
    """A value of every field of each message, none at its default."""
    hit = pb.Hit(id="ü-1", score=0.25, payload_json='{"k":[1,2]}')
    consistency = pb.Consistency(level="bounded", max_staleness_ms=0, after={1: 2, 2**32 - 1: 2**64 - 1}, timeout_ms=9)
    values: Dict[str, pb.Message] = {
        "Consistency": consistency,
        "SearchRequest": pb.SearchRequest("c", [1.5, -2.0, 3.25], 10, "t", True, 64, False, consistency),
        "Hit": hit,
        "SearchResponse": pb.SearchResponse([hit, pb.Hit("b", -1.0)], 4, 2**40, 17),
        "Vector": pb.Vector([0.125] * 7),
        "BatchSearchRequest": pb.BatchSearchRequest("c", [pb.Vector([1.0]), pb.Vector([2.0])], 3, "t", True, "gpu"),
        "BatchResult": pb.BatchResult([hit]),
        "BatchSearchResponse": pb.BatchSearchResponse([pb.BatchResult([hit]), pb.BatchResult()], "cpu", "why", 2, 4, 5, 6),
        "Upsert": pb.Upsert("u", [1.0, 2.0], "t", "{}"),
        "Delete": pb.Delete("d", ""),
        "WriteRequest": pb.WriteRequest("c", [pb.Upsert("u", [1.0])], [pb.Delete("d", "t")], "sync", 500),
        "RegionApplied": pb.RegionApplied("west", True),
        "WriteResponse": pb.WriteResponse({0: 1, 5: 2**63}, 2, [pb.RegionApplied("west", True), pb.RegionApplied("east")]),
    }
    return values[name]


def test_every_message_round_trips() -> None:
    for name, message_type in pb.MESSAGES.items():
        value = sample(name)
        assert type(value) is message_type
        encoded = value.encode()
        assert message_type.decode(encoded) == value, name
        assert message_type.decode(message_type().encode()) == message_type(), name
        # Decoding tolerates fields it does not know, before and after.
        assert message_type.decode(b"\xf8\x07\x01" + encoded + b"\xfa\x07\x00") == value, name


def test_the_messages_match_the_proto_file() -> None:
    if not os.path.exists(PROTO):
        pytest.skip(f"{PROTO} is not here (an installed copy of the client)")
    text = re.sub(r"//[^\n]*", "", open(PROTO, encoding="utf-8").read())
    kinds = {"string": "string", "uint32": "uint32", "uint64": "uint64", "bool": "bool", "float": "float"}
    found = {}
    for name, body in re.findall(r"message\s+(\w+)\s*\{([^}]*)\}", text):
        fields = []
        for statement in body.split(";"):
            if not statement.strip():
                continue
            parsed = re.fullmatch(r"\s*(?:(optional|repeated)\s+)?(map<[^>]*>|\w+)\s+(\w+)\s*=\s*(\d+)\s*", statement)
            assert parsed, statement
            label, type_, field_name, number = parsed.groups("")
            if type_.replace(" ", "") == "map<uint32,uint64>":
                kind, label = "map_u32_u64", "plain"
            elif type_ == "float" and label == "repeated":
                kind, label = "floats", "plain"
            elif type_ in kinds:
                kind = kinds[type_]
            else:
                kind = type_
            fields.append((int(number), field_name, kind, label or "plain"))
        found[name] = fields
    assert sorted(found) == sorted(pb.MESSAGES)
    for name, message_type in pb.MESSAGES.items():
        ours = [
            (f.number, f.name, f.kind if isinstance(f.kind, str) else f.kind.NAME, f.label)
            for f in message_type.FIELDS
        ]
        assert ours == found[name], name


def test_floats_round_to_f32_and_out_of_range_becomes_infinite() -> None:
    assert pb.pack_floats([0.1]) == f32(0.1)
    assert pb.pack_floats([1e39, -1e39, 2.0]) == f32(float("inf")) + f32(float("-inf")) + f32(2.0)
    with pytest.raises(ValueError):
        pb.SearchRequest(k=2**32).encode()
    with pytest.raises(ValueError):
        pb.WriteResponse(token={-1: 0}).encode()


# ----- calls and answers -----


def test_scores_equal_what_json_gives() -> None:
    cases = {
        0.99999994: 0.99999994,  # f32 just below 1
        0.1: 0.1,
        1 / 3: 0.33333334,
        2.0**-149: 1e-45,  # the smallest subnormal
        3.4028234663852886e38: 3.4028235e38,
        0.125: 0.125,
        -0.75: -0.75,
        2.0**-96: 1.2621775e-29,  # a power of two: the shortest is not the nearest 8 digits
        2.0**87: 1.5474251e26,
        0.0: 0.0,
    }
    for value, wanted in cases.items():
        exact = struct.unpack("<f", struct.pack("<f", value))[0]
        assert _grpc.json_f32(exact) == wanted, value
        assert repr(_grpc.json_f32(exact)) == repr(json.loads(json.dumps(wanted)))


def test_search_call_sends_the_same_request_as_http() -> None:
    call = _grpc.search("docs", [1, 2], 5, "t", WriteResult(Token({2: 7}), 1), False, 64, False, None, 30.0)
    assert call.path == "/hektor.v1.Hektor/Search" and call.read_only
    sent = pb.SearchRequest.decode(call.request)
    assert sent == pb.SearchRequest(
        collection="docs",
        vector=[1.0, 2.0],
        k=5,
        tenant="t",
        without_payload=True,
        effort=64,
        rescore=False,
        consistency=pb.Consistency(after={2: 7}),
    )
    waited = _grpc.search("c", [1], 1, None, Consistency(level="strong", timeout=60), True, None, None, None, 30.0)
    assert pb.SearchRequest.decode(waited.request).consistency == pb.Consistency(level="strong", timeout_ms=60_000)
    assert waited.timeout is not None and waited.timeout >= 65  # as over HTTP
    bare = pb.SearchRequest.decode(_grpc.search("c", [1], 10, None, None, True, None, None, None, 30.0).request)
    assert bare.consistency is None and bare.rescore is None and bare.effort is None and not bare.without_payload
    # Refused before anything is sent, as over HTTP.
    for bad in ([1.0, float("nan")], "abc"):
        with pytest.raises((ValueError, TypeError)):
            _grpc.search("c", bad, 1, None, None, True, None, None, None, None)
    with pytest.raises(ValueError, match="k must be >= 0"):
        _grpc.search("c", [1.0], -1, None, None, True, None, None, None, None)
    with pytest.raises(ValueError, match="k must be >= 0"):
        _calls.search("c", [1.0], -1, None, None, True, None, None, None, None)
    # A count too large for uint32 travels as the largest, which the server refuses.
    assert pb.SearchRequest.decode(_grpc.search("c", [1], 2**40, None, None, True, None, None, None, None).request).k == 2**32 - 1


def search_answer() -> Dict[str, Any]:
    return {
        "hits": [
            {"id": "a", "score": 0.99999994, "payload": {"n": 1, "s": "ü", "l": [1.5, None]}},
            {"id": "b", "score": -0.33333334},
        ],
        "shards": 4,
        "epoch": 3,
        "took_us": 120,
    }


def test_answers_become_the_http_paths_objects() -> None:
    answer = search_answer()
    encoded = pb.SearchResponse(
        hits=[
            pb.Hit("a", 0.99999994, json.dumps(answer["hits"][0]["payload"])),
            pb.Hit("b", -1 / 3),
        ],
        shards=4,
        epoch=3,
        took_us=120,
    ).encode()
    over_grpc = _grpc.search("c", [1.0], 2, "t", None, True, None, None, None, None).parse(encoded)
    over_http = _calls.search("c", [1.0], 2, "t", None, True, None, None, None, None).parse(200, answer)
    assert over_grpc == over_http and over_grpc.raw == over_http.raw
    assert [h.tenant for h in over_grpc] == ["t", "t"] and over_grpc.hits[1].payload is None

    batch = pb.BatchSearchResponse(
        results=[pb.BatchResult([pb.Hit("a", 0.5, "{}")]), pb.BatchResult()],
        ran_on="cpu",
        why="small",
        queries=2,
        shards=1,
        epoch=0,
        took_us=9,
    ).encode()
    batch_json = {
        "results": [{"hits": [{"id": "a", "score": 0.5, "payload": {}}]}, {"hits": []}],
        "ran_on": "cpu",
        "why": "small",
        "node": "node-1",
        "forwarded_by": None,
        "queries": 2,
        "shards": 1,
        "epoch": 0,
        "took_us": 9,
    }
    got = _grpc.search_batch("c", [[1.0], [2.0]], 1, None, True, None, None).parse(batch)
    assert got == _calls.search_batch("c", [[1.0], [2.0]], 1, None, True, None, None).parse(200, batch_json)
    assert got.node is None and [len(r) for r in got] == [1, 0]

    written = _grpc.ProtoWrites.call("c", [], []).parse(pb.WriteResponse({3: 41, 0: 2}, 5).encode())
    assert written == _calls._write_result(200, {"token": {"0": 2, "3": 41}, "written": 5})

    with pytest.raises(HektorError, match="not a valid hektor.v1.SearchResponse"):
        _grpc.search("c", [1.0], 2, None, None, True, None, None, None, None).parse(b"\x0a\x09")
    with pytest.raises(HektorError, match="not a valid"):
        _grpc.search("c", [1.0], 2, None, None, True, None, None, None, None).parse(
            pb.SearchResponse([pb.Hit("a", 1.0, "{nope")]).encode()
        )


def test_batch_search_call() -> None:
    call = _grpc.search_batch("c", [[1, 2], (3.0, 4.0)], 3, "t", False, "cpu", 12.0)
    assert call.path == "/hektor.v1.Hektor/SearchBatch" and call.timeout == 12.0 and call.read_only
    assert pb.BatchSearchRequest.decode(call.request) == pb.BatchSearchRequest(
        "c", [pb.Vector([1.0, 2.0]), pb.Vector([3.0, 4.0])], 3, "t", True, "cpu"
    )
    assert json.loads(_calls.search_batch("c", [[1, 2]], 3, None, True, None, None).body) == {  # type: ignore[arg-type]
        "vectors": [[1.0, 2.0]],
        "k": 3,
    }
    with pytest.raises(ValueError, match="device"):
        _grpc.search_batch("c", [[1.0]], 3, None, True, "tpu", None)
    with pytest.raises(ValueError, match="vectors\\[1\\]"):
        _grpc.search_batch("c", [[1.0], [float("inf")]], 3, None, True, None, None)


def write_request(call: Any) -> pb.WriteRequest:
    return pb.WriteRequest.decode(call.request)


def test_writes_are_batched_like_http_ones() -> None:
    rows = [[float(i), 1.0, 2.0] for i in range(25)]
    calls = list(_grpc.upsert_batches("c", range(25), rows, "t", [{"i": i} for i in range(25)], 10, _calls.MAX_BODY_BYTES))
    requests = [write_request(c) for c in calls]
    assert [len(r.upserts) for r in requests] == [10, 10, 5]
    ups = [u for r in requests for u in r.upserts]
    assert [u.id for u in ups] == [str(i) for i in range(25)]
    assert all(u.tenant == "t" for u in ups) and json.loads(ups[7].payload_json or "") == {"i": 7}  # type: ignore[union-attr]
    assert ups[3].vector == [3.0, 1.0, 2.0]

    small = list(_grpc.upsert_batches("c", range(200), [[0.5] * 16] * 200, None, None, 10_000, 1024))
    assert len(small) > 1 and all(len(c.request) <= 1024 for c in small)
    assert sum(len(write_request(c).upserts) for c in small) == 200

    deletes = list(_grpc.delete_batches("c", ["a", 5, "b"], "t", 2))
    assert [[(d.id, d.tenant) for d in write_request(c).deletes] for c in deletes] == [[("a", "t"), ("5", "t")], [("b", "t")]]

    one = write_request(_grpc.upsert_one("c", 7, [1, 2], None, {"x": [1]}))
    assert one == pb.WriteRequest("c", [pb.Upsert("7", [1.0, 2.0], None, '{"x":[1]}')], [])
    mixed = write_request(
        _grpc.write_batch("c", [Upsert("u", [1.0], tenant="t"), {"id": "v", "vector": [2.0]}], [Delete("d"), "e", {"id": "f", "tenant": "t"}])
    )
    assert [u.id for u in mixed.upserts] == ["u", "v"] and mixed.upserts[0].tenant == "t"
    assert [(d.id, d.tenant) for d in mixed.deletes] == [("d", None), ("e", None), ("f", "t")]
    # The same checks as over HTTP, before anything is sent.
    with pytest.raises(ValueError, match="twice"):
        _grpc.upsert_batches("c", ["a", "a"], [[1.0], [2.0]], None, None, 10, _calls.MAX_BODY_BYTES)
    with pytest.raises(TypeError, match="payload must be a mapping"):
        _grpc.upsert_one("c", "a", [1.0], None, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown fields"):
        _grpc.write_batch("c", [{"id": "a", "vector": [1.0], "extra": 1}], [])


def test_numpy_rows_travel_as_their_exact_float32_values() -> None:
    np = pytest.importorskip("numpy")
    rows = np.random.default_rng(3).standard_normal((9, 6)).astype(np.float32)
    (call,) = _grpc.upsert_batches("c", np.arange(9), rows, None, None, 100, _calls.MAX_BODY_BYTES)
    sent = np.array([u.vector for u in write_request(call).upserts], dtype=np.float32)
    assert np.array_equal(sent, rows)
    queries = pb.BatchSearchRequest.decode(_grpc.search_batch("c", rows[:3], 1, None, True, None, None).request)
    assert np.array_equal(np.array([v.values for v in queries.vectors], dtype=np.float32), rows[:3])


# ----- errors -----


def test_grpc_codes_map_to_the_http_statuses() -> None:
    table = {
        "INVALID_ARGUMENT": 422,
        "NOT_FOUND": 404,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
        "RESOURCE_EXHAUSTED": 429,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "ABORTED": 409,
        "OUT_OF_RANGE": 413,
        "INTERNAL": 500,
        "CANCELLED": 503,
    }
    for code, status in table.items():
        error = _grpc.error_from(code, "the server's words", True, "/hektor.v1.Hektor/Search", "h:1")
        assert type(error) is HektorError and (error.status, error.message, error.grpc_code) == (status, "the server's words", code)
        assert "the server's words" in str(error) and code in str(error)
    assert _grpc.status_of("INVALID_ARGUMENT", "a batch holds at most 10000 upserts and deletes, got 10001; split it") == 413
    assert _grpc.status_of("INVALID_ARGUMENT", "invalid name `a b`: a collection name is ...") == 404
    assert _grpc.status_of("INVALID_ARGUMENT", "the request is not a valid hektor.v1.SearchRequest message: x") == 400
    assert _grpc.error_from("RESOURCE_EXHAUSTED", "", True, "/p", "h:1").message == "too many requests"
    # The server's hektor-http-status metadata wins over the code and the wording.
    assert _grpc.http_status_of([("hektor-http-status", "413")]) == 413
    assert _grpc.http_status_of([("other", "413")]) is None
    assert _grpc.http_status_of([("hektor-http-status", "not a number")]) is None
    assert _grpc.http_status_of([("hektor-http-status", "200")]) is None
    told = _grpc.error_from("INVALID_ARGUMENT", "some new refusal", True, "/p", "h:1", http_status=400)
    assert (told.status, told.grpc_code) == (400, "INVALID_ARGUMENT")
    assert _grpc.error_from("RESOURCE_EXHAUSTED", "", True, "/p", "h:1").is_retryable


def test_no_answer_is_a_connection_error() -> None:
    refused = _grpc.error_from("UNAVAILABLE", "failed to connect to all addresses", False, "/p", "h:1")
    assert isinstance(refused, HektorConnectionError) and refused.status == 0 and refused.is_retryable
    assert "failed" in refused.message and refused.grpc_code == "UNAVAILABLE"
    late = _grpc.error_from("DEADLINE_EXCEEDED", "Deadline Exceeded", False, "/p", "h:1", 5.0, 5.0)
    assert isinstance(late, HektorConnectionError) and "timed out" in late.message
    # The server's own deadline (a consistency wait) well before this side's: a 504.
    waited = _grpc.error_from("DEADLINE_EXCEEDED", "consistency wait timed out", True, "/p", "h:1", 0.3, 35.0)
    assert type(waited) is HektorError and waited.status == 504
    # This side's deadline reached while the server cancels the call: no answer in time.
    cut = _grpc.error_from("CANCELLED", "Timeout expired", True, "/p", "h:1", 2.0, 2.0)
    assert isinstance(cut, HektorConnectionError)


def test_addresses_and_metadata() -> None:
    assert _grpc.target_of("127.0.0.1:50051") == "127.0.0.1:50051"
    assert _grpc.target_of(" http://node-1:7071/ ") == "node-1:7071"
    with pytest.raises(ValueError, match="does not advertise"):
        _grpc.target_of(True)
    with pytest.raises(ValueError, match="without TLS"):
        _grpc.target_of("https://node:7071")
    with pytest.raises(TypeError):
        _grpc.target_of(7071)
    headers = {"accept": "application/json", "content-type": "application/json", "user-agent": "x", "authorization": "Bearer k", "X-Trace": "1"}
    assert _grpc.metadata_of(headers) == (("authorization", "Bearer k"), ("x-trace", "1"))


def test_asking_for_grpc_without_grpcio_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)  # `import grpc` now fails
    with pytest.raises(ImportError, match=re.escape("pip install 'hektor-client[grpc]'")):
        Client("http://127.0.0.1:1", grpc="127.0.0.1:2")
    # A directory named grpc on the path is not grpcio either.
    monkeypatch.setitem(sys.modules, "grpc", types.ModuleType("grpc"))
    with pytest.raises(ImportError, match="hektor-client\\[grpc\\]"):
        Client("http://127.0.0.1:1", grpc="127.0.0.1:2")
    # Without grpc= nothing needs it.
    with Client("http://127.0.0.1:1") as plain:
        assert plain.grpc is None


def test_with_grpcio_the_client_routes_searches_and_writes_over_grpc() -> None:
    try:
        _grpc.import_grpc(aio=True)
    except ImportError:
        pytest.skip("grpcio is not installed")
    with Client("http://127.0.0.1:1", "k", grpc="127.0.0.1:2") as c:
        assert c.grpc == "127.0.0.1:2" and "grpc='127.0.0.1:2'" in repr(c)
        assert c._ops is _grpc
    with Client.from_env(grpc="127.0.0.1:3") as c:
        assert c.grpc == "127.0.0.1:3"


# ----- write levels (replication=) -----

#: The message of a Write not replicated in time, as grpc/src/service.rs words it.
NOT_REPLICATED = (
    "the write is durable in region `west` but 2 of the 2 other regions needed for `sync` did not confirm it "
    "within 50 ms: region `north` has applied partition 3 up to 6 (needs 7); it will still reach them "
    '(regions that have it: ["west", "east"]; missing: ["north"]; write token: {0: 12, 3: 7})'
)


def test_write_levels_travel_in_the_write_request() -> None:
    sync = _calls.write_options("sync", 2500)
    one = _grpc.upsert_one("c", "a", [1.0], None, None, options=sync)
    assert write_request(one) == pb.WriteRequest("c", [pb.Upsert("a", [1.0])], [], "sync", 2500)
    assert one.wait == 2.5
    # Field 4 (string) and field 5 (an optional uint64: sent even at 0).
    tail = pb.WriteRequest(replication="quorum", timeout_ms=0).encode()
    assert tail == b"\x22\x06quorum" + b"\x28\x00"
    calls = list(_grpc.upsert_batches("c", range(200), [[0.5] * 16] * 200, None, None, 10_000, 1024, options=sync))
    assert len(calls) > 1 and all(len(c.request) <= 1024 for c in calls)  # the level counted in the size
    assert all((write_request(c).replication, write_request(c).timeout_ms) == ("sync", 2500) for c in calls)
    assert _grpc.ProtoWrites.overhead("docs", sync) == 6 + 6 + 3
    (deletes,) = _grpc.delete_batches("c", ["a"], "t", 10, options=_calls.write_options("quorum"))
    assert (write_request(deletes).replication, write_request(deletes).timeout_ms) == ("quorum", None)
    assert deletes.wait == _calls.DEFAULT_REPLICATION_WAIT_S
    mixed = _grpc.write_batch("c", [], ["d"], options=_calls.write_options("async"))
    assert write_request(mixed).replication == "async" and mixed.wait is None
    plain = _grpc.write_batch("c", [], ["d"])
    assert (write_request(plain).replication, write_request(plain).timeout_ms, plain.wait) == ("", None, None)


def test_write_answers_name_the_regions_as_over_http() -> None:
    answer = pb.WriteResponse(
        {3: 41}, 2, [pb.RegionApplied("west", True), pb.RegionApplied("east", True), pb.RegionApplied("north", False)]
    )
    over_grpc = _grpc.ProtoWrites.call("c", [], []).parse(answer.encode())
    over_http = _calls._write_result(
        200, {"token": {"3": 41}, "written": 2, "replicated": {"regions": ["west", "east"], "missing": ["north"]}}
    )
    assert over_grpc == over_http and over_grpc.regions == ["west", "east"] and over_grpc.missing == ["north"]
    # An async write's answer names no regions: None, as HTTP without `replicated`.
    bare = _grpc.ProtoWrites.call("c", [], []).parse(pb.WriteResponse({0: 1}, 1).encode())
    assert bare.regions is None and bare.missing is None


def test_a_write_not_replicated_in_time_is_a_replication_timeout() -> None:
    error = _grpc.error_from("DEADLINE_EXCEEDED", NOT_REPLICATED, True, "/hektor.v1.Hektor/Write", "h:1", 0.1, 30.0, 504)
    assert isinstance(error, ReplicationTimeout) and isinstance(error, HektorError)
    assert (error.status, error.grpc_code, error.message) == (504, "DEADLINE_EXCEEDED", NOT_REPLICATED)
    assert dict(error.token or {}) == {0: 12, 3: 7} and error.written is None
    assert (error.regions, error.missing) == (["west", "east"], ["north"])
    assert not error.is_retryable
    # Without the metadata, DEADLINE_EXCEEDED still maps to 504.
    assert isinstance(_grpc.error_from("DEADLINE_EXCEEDED", NOT_REPLICATED, True, "/hektor.v1.Hektor/Write", "h:1"), ReplicationTimeout)
    # A message in another form: a ReplicationTimeout whose parts are unknown.
    vague = _grpc.error_from("DEADLINE_EXCEEDED", "2 regions did not confirm it within 50 ms", True, "/hektor.v1.Hektor/Write", "h:1")
    assert isinstance(vague, ReplicationTimeout) and (vague.token, vague.regions, vague.missing) == (None, None, None)
    assert _grpc.not_replicated(NOT_REPLICATED.replace("{0: 12, 3: 7}", "{}"))[0] == Token()
    assert _grpc.not_replicated(NOT_REPLICATED.replace('["north"]', "[\"n\\u{7}\"]"))[2] is None
    # Other DEADLINE_EXCEEDEDs stay plain 504s: a search's consistency wait, a write's log.
    search = _grpc.error_from("DEADLINE_EXCEEDED", "consistency wait timed out", True, "/hektor.v1.Hektor/Search", "h:1", http_status=504)
    assert type(search) is HektorError and search.is_retryable
    log = _grpc.error_from("DEADLINE_EXCEEDED", "the log did not answer in time", True, "/hektor.v1.Hektor/Write", "h:1", http_status=504)
    assert type(log) is HektorError
    # This side's own deadline: no answer, whatever the method.
    late = _grpc.error_from("DEADLINE_EXCEEDED", "Deadline Exceeded", False, "/hektor.v1.Hektor/Write", "h:1", 5.0, 5.0)
    assert isinstance(late, HektorConnectionError)


class FakeChannel:
    """A gRPC channel answering each call with the next answer (bytes, or a HektorError
    raised), keeping the calls and the timeout each was given."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list = []  # type: ignore[type-arg]

    def call(self, call: Any, timeout: Any) -> bytes:
        self.calls.append((call, timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, HektorError):
            raise answer
        return answer  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


def grpc_client_on(channel: FakeChannel, timeout: float = 3.0) -> Client:
    """A Client whose searches and writes go to ``channel`` as gRPC calls (no grpcio)."""
    client = Client("http://127.0.0.1:1", timeout=timeout)
    client._ops = _grpc
    client._channel = channel  # type: ignore[assignment]
    return client


def test_clients_send_write_levels_over_grpc() -> None:
    ok = pb.WriteResponse({0: 5}, 1, [pb.RegionApplied("local", True)]).encode()
    channel = FakeChannel(ok)
    with grpc_client_on(channel) as hk:
        written = hk.upsert("c", "a", [1.0], replication="sync", replication_timeout_ms=20_000)
        assert (written.regions, written.missing) == (["local"], [])
        hk.write("c", [Upsert("b", [2.0])], replication="quorum")
        hk.delete("c", "a", replication="async", replication_timeout_ms=5)
        many = hk.upsert_many("c", ["x", "y", "z"], [[1.0]] * 3, batch_size=2, replication="sync")
        assert many.batches == 2 and many.regions == ["local"]
        hk.upsert("c", "plain", [1.0])
        with pytest.raises(ValueError, match="replication must be one of"):
            hk.delete("c", "a", replication="majority")
    sent = [(write_request(c).replication, write_request(c).timeout_ms) for c, _ in channel.calls]
    assert sent == [("sync", 20_000), ("quorum", None), ("async", 5), ("sync", None), ("sync", None), ("", None)]
    timeouts = [t for _, t in channel.calls]
    assert timeouts == [25.0, _calls.DEFAULT_REPLICATION_WAIT_S + 5.0, 3.0, 15.0, 15.0, 3.0]

    refused = _grpc.error_from("DEADLINE_EXCEEDED", NOT_REPLICATED, True, "/hektor.v1.Hektor/Write", "h:1", 0.1, 30.0, 504)
    channel = FakeChannel(ok, refused)
    with grpc_client_on(channel) as hk:
        with pytest.raises(ReplicationTimeout) as raised:
            hk.upsert_many("c", ["x", "y", "z"], [[1.0]] * 3, batch_size=2, replication="sync", replication_timeout_ms=50)
    assert raised.value.missing == ["north"] and raised.value.partial is not None
    assert dict(raised.value.partial.token) == {0: 5} and len(channel.calls) == 2  # not retried

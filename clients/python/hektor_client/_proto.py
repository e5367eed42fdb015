"""The protobuf messages of hektor's gRPC API (``grpc/proto/hektor.proto``, package
``hektor.v1``), encoded and decoded by hand: no protoc, no generated stubs, no
``protobuf`` package. This module owns the wire format and nothing else (no I/O, no
grpcio).

Each message is a dataclass whose ``FIELDS`` list its fields as the .proto file numbers
and types them; one generic encoder and decoder work from that table:

- varint scalars (``uint32``, ``uint64``, ``bool``), ``string`` (UTF-8, length-delimited)
  and ``float`` (4 bytes, little-endian);
- proto3 presence: a plain scalar at its default (0, "", False) is left out, an
  ``optional`` one is sent whenever it is not None, a message field whenever it is not
  None;
- ``repeated float`` packed (one length-delimited field of little-endian f32; the decoder
  also takes the unpacked form), repeated messages one record each;
- ``map<uint32, uint64>`` as repeated entry messages (key = 1, value = 2);
- on decode, fields this module does not know are skipped by wire type (varint, 64-bit,
  length-delimited, groups, 32-bit), a singular message seen twice is merged, and for a
  scalar the last value wins, as protobuf specifies.

A repeated message field may also hold already encoded messages (``bytes``), so a write
can be assembled from upserts encoded one at a time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Tuple, Type, TypeVar, Union

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_F32 = struct.Struct("<f")

M = TypeVar("M", bound="Message")


class DecodeError(ValueError):
    """Bytes that are not a valid encoding of the message asked for."""


class Field(NamedTuple):
    """One field of a message: its number, attribute name, type and label.

    ``kind``: "string", "uint32", "uint64", "bool", "float", "floats" (repeated float,
    packed), "map_u32_u64", or a Message subclass. ``label``: "plain" (proto3 implicit
    presence), "optional" (explicit presence) or "repeated" (messages only)."""

    number: int
    name: str
    kind: Any
    label: str = "plain"


# ----- primitives -----


def encode_varint(value: int, out: bytearray) -> None:
    """Append ``value`` (0 to 2**64 - 1) as a base-128 varint."""
    if value < 0 or value > _U64:
        raise ValueError(f"a varint holds 0 to 2**64 - 1, got {value}")
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def varint_size(value: int) -> int:
    """Bytes of ``value`` as a varint."""
    size = 1
    while value > 0x7F:
        value >>= 7
        size += 1
    return size


def decode_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise DecodeError("varint longer than 64 bits")
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def _tag(number: int, wire_type: int, out: bytearray) -> None:
    encode_varint((number << 3) | wire_type, out)


def _len_field(number: int, payload: Union[bytes, bytearray], out: bytearray) -> None:
    _tag(number, LEN, out)
    encode_varint(len(payload), out)
    out += payload


def pack_floats(values: Sequence[float]) -> bytes:
    """Little-endian f32s, rounded to nearest as the server's JSON reader rounds a number
    to f32; a finite value beyond f32's range becomes +-inf there too (the server then
    refuses it as it would over HTTP)."""
    try:
        return struct.pack(f"<{len(values)}f", *values)
    except OverflowError:
        return b"".join(_pack_f32(float(v)) for v in values)


def _pack_f32(value: float) -> bytes:
    try:
        return _F32.pack(value)
    except OverflowError:
        return _F32.pack(float("inf") if value > 0 else float("-inf"))


def unpack_floats(data: bytes) -> List[float]:
    if len(data) % 4:
        raise DecodeError(f"packed floats of {len(data)} bytes (not a multiple of 4)")
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def skip_field(data: bytes, pos: int, number: int, wire_type: int) -> int:
    """The position after the value of an unknown field whose tag ended at ``pos``."""
    if wire_type == VARINT:
        return decode_varint(data, pos)[1]
    if wire_type == I64:
        end = pos + 8
    elif wire_type == I32:
        end = pos + 4
    elif wire_type == LEN:
        size, pos = decode_varint(data, pos)
        end = pos + size
    elif wire_type == SGROUP:
        while True:
            key, pos = decode_varint(data, pos)
            if key & 7 == EGROUP:
                if key >> 3 != number:
                    raise DecodeError(f"group {number} ended by the end of group {key >> 3}")
                return pos
            pos = skip_field(data, pos, key >> 3, key & 7)
    else:
        raise DecodeError(f"field {number} has wire type {wire_type}, which no field has here")
    if end > len(data):
        raise DecodeError(f"field {number} runs past the end of the message")
    return end


# ----- messages -----


class Message:
    """A message of hektor.v1: a dataclass with a ``FIELDS`` table."""

    FIELDS: ClassVar[Tuple[Field, ...]] = ()
    NAME: ClassVar[str] = ""

    def encode(self) -> bytes:
        out = bytearray()
        for f in self.FIELDS:
            _encode_field(f, getattr(self, f.name), out)
        return bytes(out)

    @classmethod
    def decode(cls: Type[M], data: Union[bytes, bytearray, memoryview]) -> M:
        data = bytes(data)
        by_number = _by_number(cls)
        values: Dict[str, Any] = {}
        merged: Dict[str, bytearray] = {}  # singular message fields: encodings concatenated
        pos, end = 0, len(data)
        while pos < end:
            key, pos = decode_varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                raise DecodeError(f"{cls.NAME}: field number 0")
            f = by_number.get(number)
            if f is None:
                pos = skip_field(data, pos, number, wire_type)
                continue
            pos = _decode_field(cls, f, wire_type, data, pos, values, merged)
        for name, raw in merged.items():
            kind = next(f.kind for f in cls.FIELDS if f.name == name)
            values[name] = kind.decode(bytes(raw))
        return cls(**values)  # type: ignore[call-arg]


_BY_NUMBER: Dict[type, Dict[int, Field]] = {}


def _by_number(cls: type) -> Dict[int, Field]:
    table = _BY_NUMBER.get(cls)
    if table is None:
        table = _BY_NUMBER[cls] = {f.number: f for f in cls.FIELDS}  # type: ignore[attr-defined]
    return table


def _encode_field(f: Field, value: Any, out: bytearray) -> None:
    kind, label, number = f.kind, f.label, f.number
    if label == "repeated":
        for item in value:
            _len_field(number, item if isinstance(item, (bytes, bytearray)) else item.encode(), out)
        return
    if kind == "floats":
        if len(value):
            _len_field(number, pack_floats(value), out)
        return
    if kind == "map_u32_u64":
        for key in sorted(value):
            entry = bytearray()
            _tag(1, VARINT, entry)
            encode_varint(_check(int(key), _U32, f), entry)
            _tag(2, VARINT, entry)
            encode_varint(_check(int(value[key]), _U64, f), entry)
            _len_field(number, bytes(entry), out)
        return
    if value is None:
        if label == "optional" or isinstance(kind, type):
            return
        raise ValueError(f"field {f.name} is not optional: it cannot be None")
    if isinstance(kind, type):  # a message: present when not None
        _len_field(number, value if isinstance(value, (bytes, bytearray)) else value.encode(), out)
        return
    plain = label == "plain"
    if kind == "string":
        if plain and value == "":
            return
        _len_field(number, value.encode("utf-8"), out)
    elif kind in ("uint32", "uint64"):
        value = _check(int(value), _U32 if kind == "uint32" else _U64, f)
        if plain and value == 0:
            return
        _tag(number, VARINT, out)
        encode_varint(value, out)
    elif kind == "bool":
        if plain and not value:
            return
        _tag(number, VARINT, out)
        out.append(1 if value else 0)
    elif kind == "float":
        if plain and value == 0.0:
            return
        _tag(number, I32, out)
        out += _pack_f32(float(value))
    else:  # pragma: no cover - a mistake in a FIELDS table
        raise TypeError(f"unknown field kind {kind!r}")


def _check(value: int, limit: int, f: Field) -> int:
    if value < 0 or value > limit:
        raise ValueError(f"field {f.name} holds 0 to {limit}, got {value}")
    return value


def _expect(cls: Type["Message"], f: Field, wire_type: int, wanted: int) -> None:
    if wire_type != wanted:
        raise DecodeError(f"{cls.NAME}.{f.name} (field {f.number}) has wire type {wire_type}, expected {wanted}")


def _decode_field(
    cls: Type["Message"],
    f: Field,
    wire_type: int,
    data: bytes,
    pos: int,
    values: Dict[str, Any],
    merged: Dict[str, bytearray],
) -> int:
    kind = f.kind
    if kind == "floats" and wire_type == I32:  # the unpacked form: one float per record
        _check_room(data, pos, 4, cls, f)
        values.setdefault(f.name, []).append(_F32.unpack_from(data, pos)[0])
        return pos + 4
    if kind in ("uint32", "uint64", "bool"):
        _expect(cls, f, wire_type, VARINT)
        raw, pos = decode_varint(data, pos)
        values[f.name] = bool(raw) if kind == "bool" else raw & (_U32 if kind == "uint32" else _U64)
        return pos
    if kind == "float":
        _expect(cls, f, wire_type, I32)
        _check_room(data, pos, 4, cls, f)
        values[f.name] = _F32.unpack_from(data, pos)[0]
        return pos + 4
    _expect(cls, f, wire_type, LEN)
    size, pos = decode_varint(data, pos)
    _check_room(data, pos, size, cls, f)
    chunk = data[pos : pos + size]
    pos += size
    if kind == "string":
        try:
            values[f.name] = chunk.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DecodeError(f"{cls.NAME}.{f.name} is not UTF-8: {err}") from None
    elif kind == "floats":
        values.setdefault(f.name, []).extend(unpack_floats(chunk))
    elif kind == "map_u32_u64":
        key, value = _decode_entry(chunk, cls, f)
        values.setdefault(f.name, {})[key] = value
    elif f.label == "repeated":
        values.setdefault(f.name, []).append(kind.decode(chunk))
    else:
        merged.setdefault(f.name, bytearray()).extend(chunk)
    return pos


def _check_room(data: bytes, pos: int, size: int, cls: Type["Message"], f: Field) -> None:
    if pos + size > len(data):
        raise DecodeError(f"{cls.NAME}.{f.name} runs past the end of the message")


def _decode_entry(chunk: bytes, cls: Type["Message"], f: Field) -> Tuple[int, int]:
    key = value = 0
    pos = 0
    while pos < len(chunk):
        tag, pos = decode_varint(chunk, pos)
        number, wire_type = tag >> 3, tag & 7
        if number in (1, 2):
            if wire_type != VARINT:
                raise DecodeError(f"{cls.NAME}.{f.name}: a map entry's field {number} has wire type {wire_type}")
            raw, pos = decode_varint(chunk, pos)
            if number == 1:
                key = raw & _U32
            else:
                value = raw & _U64
        else:
            pos = skip_field(chunk, pos, number, wire_type)
    return key, value


# ----- hektor.v1 -----


@dataclass
class Consistency(Message):
    level: str = ""
    max_staleness_ms: Optional[int] = None
    after: Dict[int, int] = field(default_factory=dict)
    timeout_ms: Optional[int] = None
    region: Optional[str] = None

    NAME = "Consistency"
    FIELDS = (
        Field(1, "level", "string"),
        Field(2, "max_staleness_ms", "uint64", "optional"),
        Field(3, "after", "map_u32_u64"),
        Field(4, "timeout_ms", "uint64", "optional"),
        Field(5, "region", "string", "optional"),
    )


@dataclass
class SearchRequest(Message):
    collection: str = ""
    vector: List[float] = field(default_factory=list)
    k: Optional[int] = None
    tenant: Optional[str] = None
    without_payload: bool = False
    effort: Optional[int] = None
    rescore: Optional[bool] = None
    consistency: Optional[Consistency] = None

    NAME = "SearchRequest"
    FIELDS = (
        Field(1, "collection", "string"),
        Field(2, "vector", "floats"),
        Field(3, "k", "uint32", "optional"),
        Field(4, "tenant", "string", "optional"),
        Field(5, "without_payload", "bool"),
        Field(6, "effort", "uint32", "optional"),
        Field(7, "rescore", "bool", "optional"),
        Field(8, "consistency", Consistency),
    )


@dataclass
class Hit(Message):
    id: str = ""
    score: float = 0.0
    payload_json: Optional[str] = None

    NAME = "Hit"
    FIELDS = (
        Field(1, "id", "string"),
        Field(2, "score", "float"),
        Field(3, "payload_json", "string", "optional"),
    )


@dataclass
class SearchResponse(Message):
    hits: List[Hit] = field(default_factory=list)
    shards: int = 0
    epoch: int = 0
    took_us: int = 0

    NAME = "SearchResponse"
    FIELDS = (
        Field(1, "hits", Hit, "repeated"),
        Field(2, "shards", "uint32"),
        Field(3, "epoch", "uint64"),
        Field(4, "took_us", "uint64"),
    )


@dataclass
class Vector(Message):
    values: List[float] = field(default_factory=list)

    NAME = "Vector"
    FIELDS = (Field(1, "values", "floats"),)


@dataclass
class BatchSearchRequest(Message):
    collection: str = ""
    vectors: List[Union[Vector, bytes]] = field(default_factory=list)
    k: Optional[int] = None
    tenant: Optional[str] = None
    without_payload: bool = False
    device: str = ""

    NAME = "BatchSearchRequest"
    FIELDS = (
        Field(1, "collection", "string"),
        Field(2, "vectors", Vector, "repeated"),
        Field(3, "k", "uint32", "optional"),
        Field(4, "tenant", "string", "optional"),
        Field(5, "without_payload", "bool"),
        Field(6, "device", "string"),
    )


@dataclass
class BatchResult(Message):
    hits: List[Hit] = field(default_factory=list)

    NAME = "BatchResult"
    FIELDS = (Field(1, "hits", Hit, "repeated"),)


@dataclass
class BatchSearchResponse(Message):
    results: List[BatchResult] = field(default_factory=list)
    ran_on: str = ""
    why: str = ""
    queries: int = 0
    shards: int = 0
    epoch: int = 0
    took_us: int = 0

    NAME = "BatchSearchResponse"
    FIELDS = (
        Field(1, "results", BatchResult, "repeated"),
        Field(2, "ran_on", "string"),
        Field(3, "why", "string"),
        Field(4, "queries", "uint32"),
        Field(5, "shards", "uint32"),
        Field(6, "epoch", "uint64"),
        Field(7, "took_us", "uint64"),
    )


@dataclass
class Upsert(Message):
    id: str = ""
    vector: List[float] = field(default_factory=list)
    tenant: Optional[str] = None
    payload_json: Optional[str] = None

    NAME = "Upsert"
    FIELDS = (
        Field(1, "id", "string"),
        Field(2, "vector", "floats"),
        Field(3, "tenant", "string", "optional"),
        Field(4, "payload_json", "string", "optional"),
    )


@dataclass
class Delete(Message):
    id: str = ""
    tenant: Optional[str] = None

    NAME = "Delete"
    FIELDS = (
        Field(1, "id", "string"),
        Field(2, "tenant", "string", "optional"),
    )


@dataclass
class WriteRequest(Message):
    collection: str = ""
    upserts: List[Union[Upsert, bytes]] = field(default_factory=list)
    deletes: List[Union[Delete, bytes]] = field(default_factory=list)
    replication: str = ""
    timeout_ms: Optional[int] = None

    NAME = "WriteRequest"
    FIELDS = (
        Field(1, "collection", "string"),
        Field(2, "upserts", Upsert, "repeated"),
        Field(3, "deletes", Delete, "repeated"),
        Field(4, "replication", "string"),
        Field(5, "timeout_ms", "uint64", "optional"),
    )


@dataclass
class RegionApplied(Message):
    region: str = ""
    applied: bool = False

    NAME = "RegionApplied"
    FIELDS = (
        Field(1, "region", "string"),
        Field(2, "applied", "bool"),
    )


@dataclass
class WriteResponse(Message):
    token: Dict[int, int] = field(default_factory=dict)
    written: int = 0
    regions: List[RegionApplied] = field(default_factory=list)
    region: str = ""

    NAME = "WriteResponse"
    FIELDS = (
        Field(1, "token", "map_u32_u64"),
        Field(2, "written", "uint32"),
        Field(3, "regions", RegionApplied, "repeated"),
        Field(4, "region", "string"),
    )


#: Every message of hektor.proto, by its name there.
MESSAGES: Dict[str, Type[Message]] = {
    m.NAME: m
    for m in (
        Consistency,
        SearchRequest,
        Hit,
        SearchResponse,
        Vector,
        BatchSearchRequest,
        BatchResult,
        BatchSearchResponse,
        Upsert,
        Delete,
        WriteRequest,
        RegionApplied,
        WriteResponse,
    )
}


def repeated_field_size(encoded_len: int) -> int:
    """Bytes a repeated message field of ``encoded_len`` bytes adds to its parent (a field
    number below 16: a one-byte tag)."""
    return 1 + varint_size(encoded_len) + encoded_len

"""The client's gRPC transport (``hektor serve --grpc-listen``, service
``hektor.v1.Hektor``): what Search, SearchBatch and Write send, how their answers become
the same objects the HTTP API's answers give, how a gRPC status becomes the
:class:`HektorError` the HTTP API gives for the same failure, and the channels (grpcio,
blocking and ``grpc.aio``).

The functions building calls here have the same names and arguments as their HTTP twins
in ``_calls`` (``search``, ``search_batch``, ``upsert_one``, ``write_batch``,
``upsert_batches``, ``delete_batches``), so a client picks one module or the other and
sends what it gets. Inputs are checked by the same helpers, before anything is sent.
Answers are turned into the JSON the HTTP API would have given and read by the same
parsers: ids, payloads (parsed from ``payload_json``) and scores are equal, a score being
the double a JSON reader gets from the server's f32 (see :func:`json_f32`).

grpcio is optional (``pip install 'hektor-client[grpc]'``): it is imported only when a
client is made with ``grpc=``. The messages are encoded by ``_proto``, by hand.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, Iterable, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import _calls
from . import _proto as pb
from ._calls import NO_WRITE_OPTIONS, IdLike, MatrixLike, TenantArg, VectorLike, WriteOptions, as_id, as_vector, count
from ._errors import HektorConnectionError, HektorError, ReplicationTimeout
from ._types import (
    BatchSearchResult,
    Consistency,
    ConsistencyLike,
    Delete,
    SearchResult,
    Token,
    Upsert,
    WriteResult,
    as_consistency,
)
from ._version import __version__

T = TypeVar("T")

SERVICE = "hektor.v1.Hektor"
#: What to run when grpcio is missing.
INSTALL = "pip install 'hektor-client[grpc]'"

_U32 = (1 << 32) - 1
_F32 = struct.Struct("<f")


@dataclass
class GrpcCall(Generic[T]):
    """One unary call of ``hektor.v1.Hektor``: the method, the encoded request, and how the
    encoded answer is read. ``read_only``, ``timeout`` and ``wait`` as for an HTTP
    ``Call``."""

    method: str
    request: bytes
    parse: Callable[[bytes], T]
    read_only: bool = False
    timeout: Optional[float] = None
    wait: Optional[float] = None

    @property
    def path(self) -> str:
        return f"/{SERVICE}/{self.method}"


# ----- answers as the HTTP API gives them -----


def json_f32(value: float) -> float:
    """The float a JSON reader gets for the f32 ``value`` from the HTTP API.

    The server writes an f32 score as the shortest decimal that reads back as the same f32
    (serde_json, ryu), and Python reads that decimal as a double: 0.99999994, not the f32's
    exact 0.9999999403953552. The same decimal is found here (the shortest that round-trips
    through f32, the nearest of those), so a score over gRPC equals the one over HTTP."""
    if value == 0.0 or not math.isfinite(value):
        return value
    magnitude = abs(value)
    target = _F32.pack(magnitude)
    if struct.unpack("<I", target)[0] & 0x7FFFFF == 0:
        return math.copysign(_shortest_at_power_of_two(magnitude, target), value)
    # The nearest decimal of n digits round-trips for every n from the shortest length up
    # (a longer length's nearest is at least as near), so the length is bisected.
    low, high = 1, 9
    best = magnitude
    while low < high:
        digits = (low + high) // 2
        candidate = float("%.*e" % (digits - 1, magnitude))
        if _same_f32(candidate, target):
            high, best = digits, candidate
        else:
            low = digits + 1
    if high == 9:  # 9 digits always round-trip an f32
        best = float("%.8e" % magnitude)
    return math.copysign(best, value)


def _shortest_at_power_of_two(magnitude: float, target: bytes) -> float:
    # At a power of two the f32 below is nearer than the one above, so the round-trip
    # interval is lopsided: the nearest decimal of some length may miss it where the next
    # one up of that length hits it.
    for digits in range(1, 10):
        text = "%.*e" % (digits - 1, magnitude)
        candidate = float(text)
        if _same_f32(candidate, target):
            return candidate
        if candidate < magnitude:
            mantissa, exponent = text.split("e")
            up = float(f"{int(mantissa.replace('.', '')) + 1}e{int(exponent) - (digits - 1)}")
            if _same_f32(up, target):
                return up
    return magnitude  # unreachable: 9 digits always round-trip an f32


def _same_f32(candidate: float, target: bytes) -> bool:
    try:
        return _F32.pack(candidate) == target
    except OverflowError:
        return False


def _hit_json(hit: pb.Hit) -> Dict[str, Any]:
    out: Dict[str, Any] = {"id": hit.id, "score": json_f32(hit.score)}
    if hit.payload_json is not None:
        out["payload"] = json.loads(hit.payload_json)
    return out


def _answer(method: str, message: Type[pb.Message], data: bytes, as_json: Callable[[Any], Any]) -> Any:
    """The decoded answer as the HTTP API's JSON; an answer that does not decode is a
    HektorError, as an HTTP answer that is not JSON is."""
    try:
        return as_json(message.decode(data))
    except ValueError as err:  # pb.DecodeError, or a payload_json that is not JSON
        raise HektorError(
            200, f"the answer is not a valid hektor.v1.{message.__name__}: {err}", grpc_code="OK", url=f"/{SERVICE}/{method}"
        ) from err


def _search_json(answer: pb.SearchResponse) -> Dict[str, Any]:
    return {
        "hits": [_hit_json(h) for h in answer.hits],
        "shards": answer.shards,
        "epoch": answer.epoch,
        "took_us": answer.took_us,
    }


def _batch_json(answer: pb.BatchSearchResponse) -> Dict[str, Any]:
    return {
        "results": [{"hits": [_hit_json(h) for h in r.hits]} for r in answer.results],
        "ran_on": answer.ran_on,
        "why": answer.why,
        "queries": answer.queries,
        "shards": answer.shards,
        "epoch": answer.epoch,
        "took_us": answer.took_us,
    }


def _write_json(answer: pb.WriteResponse) -> Dict[str, Any]:
    out: Dict[str, Any] = {"token": {str(p): o for p, o in sorted(answer.token.items())}, "written": answer.written}
    if answer.regions:  # a quorum or sync write: HTTP's `replicated`
        out["replicated"] = {
            "regions": [r.region for r in answer.regions if r.applied],
            "missing": [r.region for r in answer.regions if not r.applied],
        }
    return out


# ----- calls -----


def _u32(value: int) -> int:
    # A count past uint32 cannot travel; the largest one does, and the server refuses it
    # as out of range, as it refuses the larger one over HTTP.
    return min(value, _U32)


def consistency_message(wanted: Consistency) -> pb.Consistency:
    """The wire's Consistency of the client's (checked as for HTTP by ``to_json``)."""
    out = wanted.to_json()
    return pb.Consistency(
        level=out.get("level", ""),
        max_staleness_ms=out.get("max_staleness_ms"),
        after={int(p): int(o) for p, o in (out.get("after") or {}).items()},
        timeout_ms=out.get("timeout_ms"),
    )


def search(
    collection: str,
    vector: VectorLike,
    k: int,
    tenant: Optional[str],
    consistency: Optional[ConsistencyLike],
    with_payload: bool,
    effort: Optional[int],
    rescore: Optional[bool],
    timeout: Optional[float],
    client_timeout: Optional[float],
) -> GrpcCall[SearchResult]:
    """``Search``, as ``_calls.search``."""
    values = as_vector(vector, "query vector")
    k = count(k, "k")
    wanted = as_consistency(consistency)
    request = pb.SearchRequest(
        collection=collection,
        vector=values,
        k=_u32(k),
        tenant=tenant,
        without_payload=not with_payload,
        effort=None if effort is None else _u32(count(effort, "effort")),
        rescore=None if rescore is None else bool(rescore),
        consistency=None if wanted is None else consistency_message(wanted),
    ).encode()
    parse_json = _calls.search_parser(tenant)

    def parse(data: bytes) -> SearchResult:
        return parse_json(200, _answer("Search", pb.SearchResponse, data, _search_json))

    return GrpcCall(
        "Search", request, parse, read_only=True, timeout=_calls.search_timeout(wanted, timeout, client_timeout)
    )


def search_batch(
    collection: str,
    vectors: MatrixLike,
    k: int,
    tenant: Optional[str],
    with_payload: bool,
    device: Optional[str],
    timeout: Optional[float],
) -> GrpcCall[BatchSearchResult]:
    """``SearchBatch``, as ``_calls.search_batch``."""
    queries = [pb.Vector(q).encode() for q in _calls.batch_queries(vectors)]
    request = pb.BatchSearchRequest(
        collection=collection,
        vectors=queries,  # type: ignore[arg-type]
        k=_u32(count(k, "k")),
        tenant=tenant,
        without_payload=not with_payload,
        device=_calls.check_device(device) or "",
    ).encode()
    parse_json = _calls.batch_parser(tenant)

    def parse(data: bytes) -> BatchSearchResult:
        return parse_json(200, _answer("SearchBatch", pb.BatchSearchResponse, data, _batch_json))

    return GrpcCall("SearchBatch", request, parse, read_only=True, timeout=timeout)


def _parse_write(data: bytes) -> WriteResult:
    return _calls._write_result(200, _answer("Write", pb.WriteResponse, data, _write_json))


class ProtoWrites:
    """``_calls.JsonWrites`` for the gRPC API: upserts and deletes encoded as hektor.v1
    messages one at a time, their size in a WriteRequest, and the ``Write`` call of a
    batch of them (so ``max_body_bytes`` counts the message's bytes)."""

    @staticmethod
    def encode_upsert(
        id: Any,
        vector: VectorLike,
        tenant: Optional[str] = None,
        payload: Optional[Mapping[str, Any]] = None,
        what: str = "upsert",
    ) -> bytes:
        id_, values, tenant, fields = _calls.upsert_fields(id, vector, tenant, payload, what)
        text = None if fields is None else _calls.dumps(fields).decode()
        return pb.Upsert(id=id_, vector=values, tenant=tenant, payload_json=text).encode()

    @staticmethod
    def encode_delete(id: Any, tenant: Optional[str] = None) -> bytes:
        return pb.Delete(id=as_id(id, "delete id"), tenant=tenant).encode()

    @staticmethod
    def overhead(collection: str, options: WriteOptions = NO_WRITE_OPTIONS) -> int:
        return len(ProtoWrites.request(collection, [], [], options))

    @staticmethod
    def item_size(item: bytes) -> int:
        return pb.repeated_field_size(len(item))

    @staticmethod
    def request(collection: str, upserts: Sequence[bytes], deletes: Sequence[bytes], options: WriteOptions) -> bytes:
        return pb.WriteRequest(
            collection=collection,
            upserts=list(upserts),
            deletes=list(deletes),
            replication=options.replication or "",
            timeout_ms=options.timeout_ms,
        ).encode()

    @staticmethod
    def call(
        collection: str, upserts: Sequence[bytes], deletes: Sequence[bytes], options: WriteOptions = NO_WRITE_OPTIONS
    ) -> GrpcCall[WriteResult]:
        request = ProtoWrites.request(collection, upserts, deletes, options)
        return GrpcCall("Write", request, _parse_write, wait=options.wait())


def upsert_one(
    collection: str,
    id: Any,
    vector: VectorLike,
    tenant: Optional[str],
    payload: Optional[Mapping[str, Any]],
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> GrpcCall[WriteResult]:
    return _calls.upsert_one(collection, id, vector, tenant, payload, ProtoWrites, options)  # type: ignore[no-any-return]


def write_batch(
    collection: str,
    upserts: Sequence[Union[Upsert, Mapping[str, Any]]],
    deletes: Sequence[Union[str, int, Delete, Mapping[str, Any]]],
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> GrpcCall[WriteResult]:
    return _calls.write_batch(collection, upserts, deletes, ProtoWrites, options)  # type: ignore[no-any-return]


def upsert_batches(
    collection: str,
    ids: Iterable[Any],
    vectors: MatrixLike,
    tenant: TenantArg,
    payloads: Optional[Sequence[Optional[Mapping[str, Any]]]],
    batch_size: int,
    max_body_bytes: int,
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> Iterator[GrpcCall[WriteResult]]:
    return _calls.upsert_batches(
        collection, ids, vectors, tenant, payloads, batch_size, max_body_bytes, ProtoWrites, options
    )


def delete_batches(
    collection: str,
    ids: Union[IdLike, Iterable[Any]],
    tenant: Optional[str],
    batch_size: int,
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> Iterator[GrpcCall[WriteResult]]:
    return _calls.delete_batches(collection, ids, tenant, batch_size, ProtoWrites, options)


# ----- errors -----

#: The metadata key under which the server sends a refusal's HTTP status.
HTTP_STATUS_KEY = "hektor-http-status"

#: The HTTP status of each gRPC code, as the HTTP API answers the same failure (the table
#: at the top of grpc/proto/hektor.proto). INVALID_ARGUMENT stands for 400, 413 and 422
#: there; see :func:`status_of`. CANCELLED is what the server answers a call that ran
#: past its --request-timeout-ms, a 503 over HTTP.
HTTP_STATUS: Dict[str, int] = {
    "INVALID_ARGUMENT": 422,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "RESOURCE_EXHAUSTED": 429,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "OUT_OF_RANGE": 413,
    "INTERNAL": 500,
    "CANCELLED": 503,
    "UNIMPLEMENTED": 501,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 400,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
}


def status_of(code: str, message: str) -> int:
    """The HTTP status of a gRPC refusal. INVALID_ARGUMENT is 422 (a value out of range,
    the HTTP API's status for nearly every such refusal) except for the few the server
    words apart: a batch of too many items (413 over HTTP), a collection name that cannot
    be one (HTTP looks it up and answers 404), a message that does not decode (400)."""
    if code == "INVALID_ARGUMENT":
        if message.startswith("a batch holds at most"):
            return 413
        if message.startswith("invalid name `"):
            return 404
        if message.startswith("the request is not a valid hektor.v1."):
            return 400
        return 422
    return HTTP_STATUS.get(code, 500)


def error_from(
    code: str,
    details: str,
    answered: bool,
    path: str,
    target: str,
    elapsed: float = 0.0,
    timeout: Optional[float] = None,
    http_status: Optional[int] = None,
) -> HektorError:
    """The HektorError of a failed call. ``answered``: the status came from the server (it
    sent metadata); one that did not (refused, reset, this side's deadline) is a
    :class:`HektorConnectionError`, as an HTTP request without an answer is."""
    url = f"{target}{path}"
    ran_out = timeout is not None and code in ("DEADLINE_EXCEEDED", "CANCELLED") and elapsed >= timeout - 0.05
    if not answered or ran_out:
        kind = "timed out" if ran_out or code == "DEADLINE_EXCEEDED" else "failed"
        error: HektorError = HektorConnectionError(f"gRPC {path} at {target} {kind}: {code}: {details}", method="gRPC", url=url)
        error.grpc_code = code
        return error
    # The server's own word for the HTTP status, else the code (and, for INVALID_ARGUMENT,
    # the message's wording) mapped as the HTTP API answers.
    status = http_status if http_status is not None else status_of(code, details)
    message = details or {503: "service unavailable", 429: "too many requests"}.get(status, f"gRPC {code}")
    if status == 504 and path.endswith("/Write") and ("did not confirm" in details or _NOT_REPLICATED in details):
        token, regions, missing = not_replicated(details)
        return ReplicationTimeout(
            message, token=token, regions=regions, missing=missing, method="gRPC", url=url, grpc_code=code
        )
    return HektorError(status, message, method="gRPC", url=url, grpc_code=code)


#: Where the message of a write not replicated in time names who has it (grpc/src/service.rs).
_NOT_REPLICATED = "(regions that have it: "
_NOT_REPLICATED_TAIL = re.compile(r"(\[.*\]); missing: (\[.*\]); write token: (\{[^{}]*\})\)\s*$", re.DOTALL)
_TOKEN = re.compile(r"\{\s*(?:\d+\s*:\s*\d+\s*(?:,\s*\d+\s*:\s*\d+\s*)*,?\s*)?\}")


def not_replicated(message: str) -> Tuple[Optional[Token], Optional[List[str]], Optional[List[str]]]:
    """The token, the regions that have the write and those missing, from the message of
    a Write the server answered DEADLINE_EXCEEDED because not enough regions confirmed
    it: ``... (regions that have it: ["a"]; missing: ["b"]; write token: {0: 5, 3: 7})``
    (Rust's debug notation). Each part is None when the message does not hold it in that
    form."""
    at = message.rfind(_NOT_REPLICATED)
    if at < 0:
        return None, None, None
    found = _NOT_REPLICATED_TAIL.match(message, at + len(_NOT_REPLICATED))
    if found is None:
        return None, None, None
    regions, missing, token_text = found.groups()
    token: Optional[Token] = None
    if _TOKEN.fullmatch(token_text):
        token = Token({int(p): int(o) for p, o in re.findall(r"(\d+)\s*:\s*(\d+)", token_text)})
    return token, _names(regions), _names(missing)


def _names(text: str) -> Optional[List[str]]:
    # Rust's debug form of a Vec<String> is JSON for names without control characters.
    try:
        names = json.loads(text)
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def _rpc_error(err: Any, call: GrpcCall[Any], target: str, started: float, timeout: Optional[float]) -> HektorError:
    code = err.code()
    name = getattr(code, "name", None) or str(code)
    trailing = err.trailing_metadata() or ()
    answered = bool(err.initial_metadata()) or bool(trailing)
    return error_from(
        name,
        err.details() or "",
        answered,
        call.path,
        target,
        time.monotonic() - started,
        timeout,
        http_status=http_status_of(trailing),
    )


def http_status_of(metadata: Any) -> Optional[int]:
    """The HTTP status the server sent beside a refusal (metadata ``hektor-http-status``),
    if any and if it is one."""
    for key, value in metadata or ():
        if key == HTTP_STATUS_KEY:
            try:
                status = int(value)
            except (TypeError, ValueError):
                return None
            return status if 400 <= status <= 599 else None
    return None


def _raise(error: HektorError, cause: BaseException) -> None:
    if isinstance(error, HektorConnectionError):
        raise error from cause
    raise error from None


# ----- channels -----


def import_grpc(aio: bool = False) -> Any:
    """grpcio, or an ImportError saying how to install it."""
    need = f"gRPC needs the grpcio package: {INSTALL} (or pip install grpcio)"
    try:
        import grpc

        if aio:
            import grpc.aio  # noqa: F401
    except ImportError as err:
        raise ImportError(need) from err
    if not hasattr(grpc, "insecure_channel"):  # e.g. a directory named grpc on sys.path
        raise ImportError(f"{need}; the `grpc` imported from {list(getattr(grpc, '__path__', []))} is not grpcio")
    return grpc


def target_of(address: Any) -> str:
    """The gRPC target of ``grpc=``: ``HOST:PORT`` as given to ``hektor serve
    --grpc-listen`` (an ``http://`` in front is dropped)."""
    if address is True:
        raise ValueError(
            "grpc=True: hektor does not advertise its gRPC port; pass the address given to "
            "`hektor serve --grpc-listen`, e.g. grpc='127.0.0.1:50051'"
        )
    if not isinstance(address, str) or not address.strip():
        raise TypeError(f"grpc must be 'HOST:PORT' (hektor serve --grpc-listen), got {address!r}")
    text = address.strip()
    if text.startswith("https://"):
        raise ValueError(f"hektor's gRPC listener is plain TCP without TLS: grpc= takes HOST:PORT, got {address!r}")
    if text.startswith("http://"):
        text = text[len("http://") :].rstrip("/")
    return text


#: No size limit on answers (grpcio's default is 4 MiB; a batch search answers more, and
#: HTTP has no such limit) nor on requests (the server's own limits apply, as over HTTP).
OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.primary_user_agent", f"hektor-client-python/{__version__}"),
)

#: HTTP headers that are not gRPC metadata (HTTP/2 or gRPC's own).
_NOT_METADATA = {
    "accept",
    "accept-encoding",
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
}


def metadata_of(headers: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    """The client's headers as call metadata: ``authorization: Bearer <key>`` and the
    caller's own headers, lower-case, without those HTTP/2 and gRPC keep to themselves."""
    out = []
    for key, value in headers.items():
        name = key.lower()
        if name in _NOT_METADATA or name.startswith(("grpc-", ":")):
            continue
        out.append((name, value))
    return tuple(out)


class Channel:
    """A blocking channel to one gRPC listener (grpcio's; it connects on first use and
    reconnects as needed)."""

    def __init__(self, address: Any, headers: Mapping[str, str]) -> None:
        self._grpc = import_grpc()
        self.target = target_of(address)
        self._metadata = metadata_of(headers)
        self._channel = self._grpc.insecure_channel(self.target, options=list(OPTIONS))
        self._methods: Dict[str, Any] = {}

    def call(self, call: GrpcCall[Any], timeout: Optional[float]) -> bytes:
        method = self._methods.get(call.path)
        if method is None:
            method = self._methods[call.path] = self._channel.unary_unary(call.path)
        started = time.monotonic()
        try:
            return method(call.request, timeout=timeout, metadata=self._metadata)  # type: ignore[no-any-return]
        except self._grpc.RpcError as err:
            _raise(_rpc_error(err, call, self.target, started, timeout), err)
            raise  # unreachable

    def close(self) -> None:
        self._channel.close()


class AioChannel:
    """An asyncio channel (``grpc.aio``) to one gRPC listener, opened on first use in the
    running event loop (and again if a later call runs in another loop)."""

    def __init__(self, address: Any, headers: Mapping[str, str]) -> None:
        self._grpc = import_grpc(aio=True)
        self.target = target_of(address)
        self._metadata = metadata_of(headers)
        self._channel: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._methods: Dict[str, Any] = {}

    def _open(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            self._channel = self._grpc.aio.insecure_channel(self.target, options=list(OPTIONS))
            self._loop = loop
            self._methods = {}
        return self._channel

    async def call(self, call: GrpcCall[Any], timeout: Optional[float]) -> bytes:
        channel = self._open()
        method = self._methods.get(call.path)
        if method is None:
            method = self._methods[call.path] = channel.unary_unary(call.path)
        started = time.monotonic()
        try:
            return await method(call.request, timeout=timeout, metadata=self._metadata)  # type: ignore[no-any-return]
        except self._grpc.RpcError as err:
            _raise(_rpc_error(err, call, self.target, started, timeout), err)
            raise  # unreachable

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and self._loop is asyncio.get_running_loop():
            await channel.close()

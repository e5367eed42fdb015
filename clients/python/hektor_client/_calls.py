"""What each API call sends and how its answer is read, shared by the sync and the async
client (they differ only in how they send). Nothing here does I/O."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote

from ._errors import HektorError, ReplicationTimeout
from ._types import (
    BatchSearchResult,
    ClusterCollection,
    ClusterShard,
    ClusterView,
    CollectionInfo,
    CollectionSpec,
    Consistency,
    ConsistencyLike,
    CreateResult,
    Delete,
    Health,
    Hit,
    JsonObject,
    Member,
    Ready,
    RingRange,
    SearchResult,
    ShardInfo,
    StoredVector,
    Token,
    Upsert,
    WriteResult,
    as_consistency,
)

T = TypeVar("T")

#: The most upserts and deletes the server takes in one write (ingest/src/validate.rs).
MAX_BATCH_ITEMS = 10_000
#: The largest request body the server takes (ingest/src/validate.rs: 64 MiB).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Default size of one bulk write: at most this many items ...
DEFAULT_BATCH_SIZE = 1_000
#: ... and at most this many bytes of JSON, well under the server's limit.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: The longest consistency wait the server allows (query/src/search.rs).
MAX_CONSISTENCY_WAIT_S = 300.0
#: The server's consistency wait when a search does not set one.
DEFAULT_CONSISTENCY_WAIT_S = 10.0
#: The write levels a write may ask for (``replication=``): durable in this region's log,
#: applied in a majority of all regions, applied in every region (ingest/src/replication.rs).
WRITE_LEVELS = ("async", "quorum", "sync")
#: How long the server waits for the other regions when a write does not set it.
DEFAULT_REPLICATION_WAIT_S = 10.0

VectorLike = Any  # a sequence of numbers or a 1-D numpy array
MatrixLike = Any  # a sequence of VectorLike or a 2-D numpy array
IdLike = Union[str, int]
TenantArg = Union[None, str, Sequence[Optional[str]]]


@dataclass
class Call(Generic[T]):
    """One HTTP request and how to read its answer.

    ``parse(status, body)`` gets the decoded JSON (or the text when ``text``) of a 2xx
    answer, or of one of the ``also_ok`` statuses; any other status is a HektorError.
    ``read_only`` calls are retried on 503 as well as 429 (a 429 is refused before any
    work, so every call may retry it).
    """

    method: str
    path: str
    parse: Callable[[int, Any], T]
    body: Optional[bytes] = None
    params: Optional[Dict[str, str]] = None
    also_ok: Tuple[int, ...] = ()
    read_only: bool = False
    timeout: Optional[float] = None
    text: bool = False
    #: Seconds the server may wait before it answers (a write waiting for other
    #: regions): the request's timeout is then at least that plus 5 s.
    wait: Optional[float] = None


def segment(value: str) -> str:
    """One path segment, percent-encoded ('/' included, so an id may hold one). The ids
    "." and ".." are sent as %2E and %2E%2E: plain, HTTP clients and proxies fold them
    away as dot segments of the path."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(str(value), safe="")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays inside payloads.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_json_default).encode()


def as_vector(vector: VectorLike, what: str = "vector") -> List[float]:
    """A list of floats from a sequence of numbers or a 1-D numpy array."""
    if isinstance(vector, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of numbers, got {type(vector).__name__}")
    ndim = getattr(vector, "ndim", None)
    if ndim is not None and ndim != 1:
        raise ValueError(f"{what} must be 1-dimensional, got an array of shape {getattr(vector, 'shape', '?')}")
    values = vector.tolist() if hasattr(vector, "tolist") else list(vector)
    out = [float(x) for x in values]
    for i, x in enumerate(out):
        if not math.isfinite(x):
            raise ValueError(f"{what}[{i}] is not a finite number ({x})")
    return out


def as_id(value: Any, what: str = "id") -> str:
    """An id as the server takes it: a str (ints and numpy integers become their decimal
    text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or isinstance(value, (bytes, float)):
        raise TypeError(f"{what} must be a str or an int, got {type(value).__name__}: {value!r}")
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{what} must be a str or an int, got {type(value).__name__}: {value!r}")


def error_from(status: int, content: bytes, headers: Mapping[str, str], method: str, url: str) -> HektorError:
    """The HektorError of a non-2xx answer, with the server's ``{"error": message}``."""
    text = content.decode("utf-8", "replace")
    body: Any = text
    message = text.strip()
    try:
        body = json.loads(text) if text else None
    except ValueError:
        pass
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    if not message:
        message = {503: "service unavailable", 429: "too many requests"}.get(status, f"HTTP {status}")
    if status == 504 and isinstance(body, dict) and isinstance(body.get("replicated"), dict):
        # A quorum or sync write not confirmed in time: durable here, says who has it.
        regions, missing = replicated_of(body)
        token = body.get("token")
        written = body.get("written")
        return ReplicationTimeout(
            message,
            token=Token(token) if isinstance(token, Mapping) else None,
            written=written if isinstance(written, int) else None,
            regions=regions,
            missing=missing,
            method=method,
            url=url,
            body=body,
        )
    retry_after: Optional[float] = None
    raw = headers.get("retry-after")
    if raw is not None:
        try:
            retry_after = float(raw)
        except ValueError:
            retry_after = None
    return HektorError(status, message, method=method, url=url, body=body, retry_after=retry_after)


def decode(content: bytes, text: bool) -> Any:
    if text:
        return content.decode("utf-8", "replace")
    if not content:
        return None
    return json.loads(content)


# ----- health, views -----


def health() -> Call[Health]:
    def parse(status: int, body: Any) -> Health:
        body = body or {}
        return Health(ok=status == 200, status=str(body.get("status", "")), failing=list(body.get("shards") or []))

    return Call("GET", "/health", parse, also_ok=(503,), read_only=True)


def ready() -> Call[Ready]:
    def parse(status: int, body: Any) -> Ready:
        body = body or {}
        return Ready(
            ready=status == 200 and bool(body.get("ready", True)),
            shards=int(body.get("shards") or 0),
            waiting=list(body.get("waiting") or []),
            failing=list(body.get("failing") or []),
        )

    return Call("GET", "/ready", parse, also_ok=(503,), read_only=True)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda _s, body: str(body), read_only=True, text=True)


def cluster() -> Call[ClusterView]:
    def parse(_status: int, body: Any) -> ClusterView:
        collections = [
            ClusterCollection(
                name=str(c.get("name")),
                partitions=int(c.get("partitions") or 0),
                replication=int(c.get("replication") or 1),
                epoch=c.get("epoch"),
                shards=[ClusterShard.from_json(s) for s in c.get("shards") or []],
                targets=list(c.get("targets") or []),
            )
            for c in body.get("collections") or []
        ]
        members = {
            str(node): Member(
                address=str(m.get("address", "")), alive=bool(m.get("alive")), leaving=bool(m.get("leaving"))
            )
            for node, m in (body.get("members") or {}).items()
        }
        return ClusterView(
            node=str(body.get("node", "")),
            collections=collections,
            members=members,
            planner=body.get("planner"),
            nodes=list(body.get("nodes") or []),
            decisions=list(body.get("decisions") or []),
            map_changes=list(body.get("map_changes") or []),
            raw=body,
            regions=list(body.get("regions") or []),
        )

    return Call("GET", "/cluster", parse, read_only=True)


# ----- collections -----


def list_collections() -> Call[List[CollectionSpec]]:
    def parse(_status: int, body: Any) -> List[CollectionSpec]:
        specs = [CollectionSpec.from_json(c) for c in body.get("collections") or []]
        return sorted(specs, key=lambda s: s.name)

    return Call("GET", "/collections", parse, read_only=True)


def get_collection(name: str) -> Call[CollectionInfo]:
    def parse(_status: int, body: Any) -> CollectionInfo:
        settings = body.get("settings")
        return CollectionInfo(
            name=name,
            settings=CollectionSpec.from_json(settings) if settings else None,
            epoch=body.get("epoch"),
            incarnation=body.get("incarnation"),
            vectors=int(body.get("vectors") or 0),
            complete=bool(body.get("complete")),
            shards=[ShardInfo.from_json(s) for s in body.get("shards") or []],
            targets=list(body.get("targets") or []),
            raw=body,
        )

    return Call("GET", f"/collections/{segment(name)}", parse, read_only=True)


def create_collection(
    name: str,
    dimension: int,
    distance: Optional[str],
    partitions: Optional[int],
    replication: Optional[int],
    placement: Optional[Mapping[str, Any]],
    merge: Optional[str] = None,
) -> Call[CreateResult]:
    spec: JsonObject = {"dimension": int(dimension)}
    if distance is not None:
        spec["distance"] = distance
    if partitions is not None:
        spec["partitions"] = int(partitions)
    if replication is not None:
        spec["replication"] = int(replication)
    if placement is not None:
        spec["placement"] = dict(placement)
    if merge is not None:
        spec["merge"] = merge

    def parse(status: int, body: Any) -> CreateResult:
        return CreateResult(spec=CollectionSpec.from_json(body), created=status == 201)

    return Call("PUT", f"/collections/{segment(name)}", parse, body=dumps(spec))


def drop_collection(name: str, missing_ok: bool) -> Call[bool]:
    def parse(status: int, _body: Any) -> bool:
        return status != 404

    return Call("DELETE", f"/collections/{segment(name)}", parse, also_ok=(404,) if missing_ok else ())


def request_plan(collection: str, action: Mapping[str, Any]) -> Call[JsonObject]:
    return Call(
        "POST",
        f"/cluster/collections/{segment(collection)}/plan",
        lambda _s, body: dict(body or {}),
        body=dumps(dict(action)),
    )


# ----- writes -----


@dataclass(frozen=True)
class WriteOptions:
    """A write's level: how many regions must have applied it before it is answered
    (``replication``: one of :data:`WRITE_LEVELS`, None for the collection's own) and how
    long the server may wait for them (``timeout_ms``, None for its default). Made by
    :func:`write_options`, which checks them."""

    replication: Optional[str] = None
    timeout_ms: Optional[int] = None

    def params(self) -> Optional[Dict[str, str]]:
        """The query of ``POST /collections/{c}/vectors`` (None: nothing to add)."""
        params: Dict[str, str] = {}
        if self.replication is not None:
            params["replication"] = self.replication
        if self.timeout_ms is not None:
            params["timeout_ms"] = str(self.timeout_ms)
        return params or None

    def wait(self) -> Optional[float]:
        """Seconds the server may wait for other regions before it answers: None for an
        ``async`` write, or one that names neither a level nor a timeout (the
        collection's level then decides, within the server's default wait)."""
        if self.replication == "async":
            return None
        if self.timeout_ms is not None:
            return self.timeout_ms / 1000.0
        if self.replication is not None:
            return DEFAULT_REPLICATION_WAIT_S
        return None


#: A write that asks for nothing: the collection's level, the server's wait.
NO_WRITE_OPTIONS = WriteOptions()


def write_options(replication: Optional[str] = None, timeout_ms: Optional[int] = None) -> WriteOptions:
    """A write's :class:`WriteOptions`, checked as far as is certain here: the level is
    one of :data:`WRITE_LEVELS` and the timeout a whole number >= 0 (its range, 1 to
    120,000 ms, is the server's to judge: a 400)."""
    if replication is not None and (not isinstance(replication, str) or replication not in WRITE_LEVELS):
        raise ValueError(f"replication must be one of {', '.join(WRITE_LEVELS)}, got {replication!r}")
    if timeout_ms is not None:
        try:
            if isinstance(timeout_ms, bool):
                raise TypeError
            timeout_ms = operator.index(timeout_ms)  # an int or a numpy integer, not 1.5
        except TypeError:
            raise TypeError(f"replication_timeout_ms must be a whole number of ms, got {timeout_ms!r}") from None
        if timeout_ms < 0:
            raise ValueError(f"replication_timeout_ms must be >= 0, got {timeout_ms}")
    return WriteOptions(replication, timeout_ms)


def replicated_of(body: Any) -> Tuple[Optional[List[str]], Optional[List[str]]]:
    """The regions that have a write and those missing, from a write answer's
    ``replicated: {"regions": [...], "missing": [...]}`` (None, None without it)."""
    replicated = body.get("replicated") if isinstance(body, dict) else None
    if not isinstance(replicated, dict):
        return None, None
    regions = replicated.get("regions")
    missing = replicated.get("missing")
    return (
        [str(r) for r in regions] if isinstance(regions, list) else None,
        [str(r) for r in missing] if isinstance(missing, list) else None,
    )


def _write_result(_status: int, body: Any) -> WriteResult:
    body = body or {}
    regions, missing = replicated_of(body)
    return WriteResult(
        token=Token(body.get("token") or {}),
        written=int(body.get("written") or 0),
        regions=regions,
        missing=missing,
    )


def write_items(
    collection: str, items: Sequence[bytes], deletes: Sequence[bytes] = (), options: WriteOptions = NO_WRITE_OPTIONS
) -> Call[WriteResult]:
    """One write of already encoded upserts and deletes, at ``options``' level."""
    body = b'{"upserts":[' + b",".join(items) + b'],"deletes":[' + b",".join(deletes) + b"]}"
    return Call(
        "POST",
        f"/collections/{segment(collection)}/vectors",
        _write_result,
        body=body,
        params=options.params(),
        wait=options.wait(),
    )


def upsert_fields(
    id: Any, vector: VectorLike, tenant: Optional[str], payload: Optional[Mapping[str, Any]], what: str
) -> Tuple[str, List[float], Optional[str], Optional[Dict[str, Any]]]:
    """One upsert's id, values, tenant and payload, checked as both APIs take them."""
    id_ = as_id(id, f"{what} id")
    values = as_vector(vector, f"{what} vector")
    if payload is not None and not isinstance(payload, Mapping):
        raise TypeError(f"{what} payload must be a mapping (a JSON object), got {type(payload).__name__}")
    return id_, values, tenant, None if payload is None else dict(payload)


def encode_upsert(
    id: Any,
    vector: VectorLike,
    tenant: Optional[str] = None,
    payload: Optional[Mapping[str, Any]] = None,
    what: str = "upsert",
) -> bytes:
    id_, values, tenant, payload = upsert_fields(id, vector, tenant, payload, what)
    item: JsonObject = {"id": id_, "vector": values}
    if tenant is not None:
        item["tenant"] = tenant
    if payload is not None:
        item["payload"] = payload
    return dumps(item)


def encode_delete(id: Any, tenant: Optional[str] = None) -> bytes:
    if tenant is None:
        return dumps(as_id(id, "delete id"))
    return dumps({"id": as_id(id, "delete id"), "tenant": tenant})


class JsonWrites:
    """How the HTTP API's write body is made: items encoded one at a time (JSON), their
    size in the body, and the call that sends a batch of them. ``_grpc.ProtoWrites`` is
    the same for the gRPC API, so both share the batching below."""

    encode_upsert = staticmethod(encode_upsert)
    encode_delete = staticmethod(encode_delete)

    @staticmethod
    def overhead(_collection: str, _options: WriteOptions = NO_WRITE_OPTIONS) -> int:
        return len(b'{"upserts":[],"deletes":[]}')  # the level travels in the query

    @staticmethod
    def item_size(item: bytes) -> int:
        return len(item) + 1  # and a comma

    @staticmethod
    def call(
        collection: str, upserts: Sequence[bytes], deletes: Sequence[bytes], options: WriteOptions = NO_WRITE_OPTIONS
    ) -> Any:
        return write_items(collection, upserts, deletes, options)


def encode_upsert_item(item: Union[Upsert, Mapping[str, Any]], index: int, wire: Any = JsonWrites) -> bytes:
    if isinstance(item, Upsert):
        return wire.encode_upsert(item.id, item.vector, item.tenant, item.payload, f"upserts[{index}]")
    if isinstance(item, Mapping):
        unknown = set(item) - {"id", "vector", "tenant", "payload"}
        if unknown:
            raise ValueError(f"upserts[{index}] has unknown fields {sorted(unknown)}")
        return wire.encode_upsert(
            item["id"], item["vector"], item.get("tenant"), item.get("payload"), f"upserts[{index}]"
        )
    raise TypeError(f"upserts[{index}] must be an Upsert or a mapping, got {type(item).__name__}")


def encode_delete_item(item: Union[str, int, Delete, Mapping[str, Any]], wire: Any = JsonWrites) -> bytes:
    if isinstance(item, Delete):
        return wire.encode_delete(item.id, item.tenant)
    if isinstance(item, Mapping):
        return wire.encode_delete(item["id"], item.get("tenant"))
    return wire.encode_delete(item)


def upsert_one(
    collection: str,
    id: Any,
    vector: VectorLike,
    tenant: Optional[str],
    payload: Optional[Mapping[str, Any]],
    wire: Any = JsonWrites,
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> Any:
    """The write of one upsert."""
    return wire.call(collection, [wire.encode_upsert(id, vector, tenant, payload)], [], options)


def write_batch(
    collection: str,
    upserts: Sequence[Union[Upsert, Mapping[str, Any]]],
    deletes: Sequence[Union[str, int, Delete, Mapping[str, Any]]],
    wire: Any = JsonWrites,
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> Any:
    """One write of upserts and deletes together (all or nothing at the server)."""
    return wire.call(
        collection,
        [encode_upsert_item(u, i, wire) for i, u in enumerate(upserts)],
        [encode_delete_item(d, wire) for d in deletes],
        options,
    )


def _check_batching(batch_size: int, max_body_bytes: int) -> None:
    if not 1 <= batch_size <= MAX_BATCH_ITEMS:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_ITEMS} (the server's limit), got {batch_size}")
    if not 1024 <= max_body_bytes <= MAX_BODY_BYTES:
        raise ValueError(f"max_body_bytes must be between 1024 and {MAX_BODY_BYTES}, got {max_body_bytes}")


def _chunks(
    collection: str,
    encoded: Iterable[bytes],
    batch_size: int,
    max_body_bytes: int,
    deletes: bool,
    wire: Any,
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> Iterator[Any]:
    """Calls of at most ``batch_size`` items and ``max_body_bytes`` bytes each."""
    overhead = wire.overhead(collection, options)

    def call(items: List[bytes]) -> Any:
        return wire.call(collection, [], items, options) if deletes else wire.call(collection, items, [], options)

    items: List[bytes] = []
    size = overhead
    for item in encoded:
        item_size = wire.item_size(item)
        if items and (len(items) >= batch_size or size + item_size > max_body_bytes):
            yield call(items)
            items, size = [], overhead
        items.append(item)
        size += item_size
    if items:
        yield call(items)


def _rows(vectors: MatrixLike) -> Tuple[int, Callable[[int, int], List[Any]]]:
    """The number of rows of a 2-D array or a sequence of vectors, and a function giving
    rows [a, b) as lists (numpy converts a block at a time, which is much faster)."""
    ndim = getattr(vectors, "ndim", None)
    if ndim is not None:
        if ndim != 2:
            raise ValueError(f"vectors must be a 2-D array (rows are vectors), got shape {getattr(vectors, 'shape', '?')}")
        return int(vectors.shape[0]), lambda a, b: vectors[a:b].tolist()
    if isinstance(vectors, (str, bytes)) or not hasattr(vectors, "__len__"):
        raise TypeError(f"vectors must be a 2-D array or a sequence of vectors, got {type(vectors).__name__}")
    return len(vectors), lambda a, b: list(vectors[a:b])


def upsert_batches(
    collection: str,
    ids: Iterable[Any],
    vectors: MatrixLike,
    tenant: TenantArg,
    payloads: Optional[Sequence[Optional[Mapping[str, Any]]]],
    batch_size: int,
    max_body_bytes: int,
    wire: Any = JsonWrites,
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> Iterator[Any]:
    """The writes of a bulk upsert, each within the server's limits, each at
    ``options``' level. Everything is checked before the first call is made (a bad row
    fails before anything is sent)."""
    _check_batching(batch_size, max_body_bytes)
    if hasattr(vectors, "to_numpy") and not hasattr(vectors, "tolist"):  # a pandas frame
        vectors = vectors.to_numpy()
    n, block = _rows(vectors)
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    if payloads is not None and len(payloads) != n:
        raise ValueError(f"{len(payloads)} payloads for {n} vectors")
    if tenant is None or isinstance(tenant, str):
        tenants: Sequence[Optional[str]] = [tenant] * n
    else:
        tenants = list(tenant)
        if len(tenants) != n:
            raise ValueError(f"{len(tenants)} tenants for {n} vectors")
    seen = set()
    for i, id_ in enumerate(ids):
        key = (tenants[i], as_id(id_, f"ids[{i}]"))
        if key in seen:
            raise ValueError(f"ids[{i}] ({key[1]!r}) appears twice for the same tenant")
        seen.add(key)

    _check_finite(vectors, n, block)

    def encoded() -> Iterator[bytes]:
        step = max(batch_size, 256)
        for start in range(0, n, step):
            rows = block(start, min(start + step, n))
            for offset, row in enumerate(rows):
                i = start + offset
                yield wire.encode_upsert(
                    ids[i], row, tenants[i], None if payloads is None else payloads[i], f"row {i}"
                )

    # Rows are encoded as the batches go out, so a large array is never held encoded
    # whole; the checks above make a bad row fail before the first write.
    return _chunks(collection, encoded(), batch_size, max_body_bytes, False, wire, options)


def _check_finite(vectors: MatrixLike, n: int, block: Callable[[int, int], List[Any]]) -> None:
    """Every row has the same length and only finite values, checked before any write."""
    if type(vectors).__module__.split(".")[0] == "numpy":
        import numpy  # only when the caller already uses it

        if vectors.size and not numpy.isfinite(vectors).all():
            row = int(numpy.argwhere(~numpy.isfinite(vectors))[0][0])
            raise ValueError(f"row {row} of vectors holds a value that is not finite")
        return
    width: Optional[int] = None
    for i, row in enumerate(block(0, n)):
        values = as_vector(row, f"row {i}")
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise ValueError(f"row {i} has {len(values)} values, row 0 has {width}")


def delete_batches(
    collection: str,
    ids: Union[IdLike, Iterable[Any]],
    tenant: Optional[str],
    batch_size: int,
    wire: Any = JsonWrites,
    options: WriteOptions = NO_WRITE_OPTIONS,
) -> Iterator[Any]:
    _check_batching(batch_size, MAX_BODY_BYTES)
    if isinstance(ids, (str, int)) or (hasattr(ids, "item") and getattr(ids, "ndim", 1) == 0):
        ids = [ids]
    items = [wire.encode_delete(i, tenant) for i in ids]
    return _chunks(collection, items, batch_size, DEFAULT_MAX_BODY_BYTES, True, wire, options)


# ----- reads -----


def get_vector(collection: str, id: Any, tenant: Optional[str]) -> Call[StoredVector]:
    id = as_id(id)

    def parse(_status: int, body: Any) -> StoredVector:
        written = body.get("written") or {}
        return StoredVector(
            id=str(body.get("id", id)),
            vector=[float(x) for x in body.get("vector") or []],
            payload=body.get("payload"),
            tenant=tenant,
            shard=body.get("shard"),
            range=RingRange.from_json(body.get("range")),
            epoch=int(body.get("epoch") or 0),
            hlc=int(written["hlc"]) if str(written.get("hlc", "")).isdigit() else None,
            origin=written.get("origin"),
            concurrent=bool(written.get("concurrent", False)),
        )

    params = {"tenant": tenant} if tenant is not None else None
    return Call(
        "GET", f"/collections/{segment(collection)}/vectors/{segment(id)}", parse, params=params, read_only=True
    )


def count(value: Any, what: str) -> int:
    """A count the caller passes (k, effort): a whole number >= 0 (the server checks the
    range). A negative one is refused here, the same way whichever API is used."""
    number = int(value)
    if number < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return number


def search_timeout(
    wanted: Optional[Consistency], timeout: Optional[float], client_timeout: Optional[float]
) -> Optional[float]:
    """A search's own timeout: when the server may wait for a token or a level, at least
    that wait plus 5 s, so the client does not give up before the server answers."""
    if timeout is None and wanted is not None and wanted.waits():
        wait = wanted.timeout if wanted.timeout is not None else DEFAULT_CONSISTENCY_WAIT_S
        if client_timeout is not None and client_timeout < wait + 5.0:
            timeout = wait + 5.0
    return timeout


def hits_of(raw: Any, tenant: Optional[str]) -> List[Hit]:
    """The hits of a search answer's JSON."""
    return [
        Hit(
            id=str(h["id"]),
            score=float(h["score"]),
            payload=h.get("payload"),
            tenant=h.get("tenant", tenant),
        )
        for h in raw or []
    ]


def search_parser(tenant: Optional[str]) -> Callable[[int, Any], SearchResult]:
    """How a search's answer (its JSON) is read."""

    def parse(_status: int, body: Any) -> SearchResult:
        return SearchResult(
            hits=hits_of(body.get("hits"), tenant),
            shards=int(body.get("shards") or 0),
            epoch=int(body.get("epoch") or 0),
            took_us=int(body.get("took_us") or 0),
            raw=body,
        )

    return parse


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
) -> Call[SearchResult]:
    request: JsonObject = {"vector": as_vector(vector, "query vector"), "k": count(k, "k")}
    if tenant is not None:
        request["tenant"] = tenant
    wanted = as_consistency(consistency)
    if wanted is not None:
        request["consistency"] = wanted.to_json()
    if not with_payload:
        request["without_payload"] = True
    if effort is not None:
        request["effort"] = count(effort, "effort")
    if rescore is not None:
        request["rescore"] = bool(rescore)
    return Call(
        "POST",
        f"/collections/{segment(collection)}/search",
        search_parser(tenant),
        body=dumps(request),
        read_only=True,
        timeout=search_timeout(wanted, timeout, client_timeout),
    )


#: Where a batch search may run: the routing rule decides ("auto"), or the caller.
DEVICES = ("auto", "cpu", "gpu")


def batch_queries(vectors: MatrixLike) -> List[List[float]]:
    """The queries of a batch search as lists of floats, each checked like one query."""
    if hasattr(vectors, "to_numpy") and not hasattr(vectors, "tolist"):  # a pandas frame
        vectors = vectors.to_numpy()
    n, block = _rows(vectors)
    return [as_vector(row, f"query vectors[{i}]") for i, row in enumerate(block(0, n))]


def check_device(device: Optional[str]) -> Optional[str]:
    if device is not None and device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def batch_parser(tenant: Optional[str]) -> Callable[[int, Any], BatchSearchResult]:
    """How a batch search's answer (its JSON) is read."""

    def parse(_status: int, body: Any) -> BatchSearchResult:
        return BatchSearchResult(
            results=[hits_of(r.get("hits"), tenant) for r in body.get("results") or []],
            ran_on=str(body.get("ran_on", "")),
            why=str(body.get("why", "")),
            queries=int(body.get("queries") or 0),
            shards=int(body.get("shards") or 0),
            epoch=int(body.get("epoch") or 0),
            took_us=int(body.get("took_us") or 0),
            node=body.get("node"),
            forwarded_by=body.get("forwarded_by"),
            raw=body,
        )

    return parse


def search_batch(
    collection: str,
    vectors: MatrixLike,
    k: int,
    tenant: Optional[str],
    with_payload: bool,
    device: Optional[str],
    timeout: Optional[float],
) -> Call[BatchSearchResult]:
    request: JsonObject = {"vectors": batch_queries(vectors), "k": count(k, "k")}
    if tenant is not None:
        request["tenant"] = tenant
    if not with_payload:
        request["without_payload"] = True
    if check_device(device) is not None:
        request["device"] = device
    return Call(
        "POST",
        f"/collections/{segment(collection)}/search/batch",
        batch_parser(tenant),
        body=dumps(request),
        read_only=True,
        timeout=timeout,
    )

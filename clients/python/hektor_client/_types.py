"""Typed values of hektor's HTTP API: what the client sends and what it gets back.

Every answer type keeps the server's decoded JSON in ``raw`` (where it has more than the
typed fields show), so fields the server adds later are still reachable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

JsonObject = Dict[str, Any]


class Token(Mapping[int, int]):
    """A write token: for each partition a write touched, the offset of its last record.

    Every write answers one. Pass it back as a search's consistency (``consistency=token``
    or ``Consistency(after=token)``) and the search waits until every shard involved has
    applied those offsets: it sees the write (read-your-writes). Tokens of several writes
    combine with :meth:`merge` (or ``|``): the result is satisfied only when all are.
    In JSON it is ``{"3": 41, "7": 9}``.
    """

    __slots__ = ("_offsets",)

    def __init__(self, offsets: Optional[Mapping[Any, int]] = None) -> None:
        self._offsets: Dict[int, int] = {}
        for partition, offset in (offsets or {}).items():
            p, o = int(partition), int(offset)
            if p < 0 or o < 0:
                raise ValueError(f"a token holds non-negative partitions and offsets, got {p}: {o}")
            self._offsets[p] = max(o, self._offsets.get(p, o))

    def __getitem__(self, partition: int) -> int:
        return self._offsets[partition]

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._offsets))

    def __len__(self) -> int:
        return len(self._offsets)

    def __repr__(self) -> str:
        return f"Token({dict(sorted(self._offsets.items()))!r})"

    def merge(self, *others: Mapping[Any, int]) -> "Token":
        """A new token satisfied only when this one and every one of ``others`` are
        (the highest offset per partition)."""
        merged = dict(self._offsets)
        for other in others:
            for partition, offset in Token(other)._offsets.items():
                merged[partition] = max(offset, merged.get(partition, offset))
        return Token(merged)

    def __or__(self, other: Mapping[Any, int]) -> "Token":
        return self.merge(other)

    def to_json(self) -> Dict[str, int]:
        """The token as the server takes it (partition numbers as JSON object keys)."""
        return {str(p): o for p, o in sorted(self._offsets.items())}


@dataclass(frozen=True)
class Consistency:
    """How fresh a search must be.

    ``after``: a write token whose writes the search must see (level ``session``).
    ``level``: ``"eventual"`` (what the node has now; the default without ``after``),
    ``"session"``, ``"bounded"`` (every write acknowledged in any region more than
    ``max_staleness`` seconds before the search began) or ``"strong"`` (every write
    acknowledged in any region before it began). ``timeout``: how long, in seconds, the
    server may wait for that before it answers 504 (its default is 10 s, at most 300 s).
    """

    after: Optional[Token] = None
    timeout: Optional[float] = None
    level: Optional[str] = None
    max_staleness: Optional[float] = None

    LEVELS = ("eventual", "session", "bounded", "strong")

    def waits(self) -> bool:
        """Whether the server may wait before answering (a token, bounded or strong)."""
        return bool(self.after) or self.level in ("bounded", "strong")

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        if self.level is not None:
            if self.level not in self.LEVELS:
                raise ValueError(f"a consistency level is one of {', '.join(self.LEVELS)}, got {self.level!r}")
            out["level"] = self.level
        if self.max_staleness is not None:
            if self.max_staleness < 0:
                raise ValueError(f"max_staleness is >= 0 seconds, got {self.max_staleness}")
            out["max_staleness_ms"] = int(round(self.max_staleness * 1000))
        if self.after is not None:
            out["after"] = Token(self.after).to_json()
        if self.timeout is not None:
            if self.timeout < 0:
                raise ValueError(f"a consistency timeout is >= 0 seconds, got {self.timeout}")
            out["timeout_ms"] = int(round(self.timeout * 1000))
        return out


@dataclass(frozen=True)
class WriteResult:
    """The answer to a write: its token, how many upserts and deletes were written, and
    in how many requests (batches) they went.

    ``regions`` and ``missing``: for a ``quorum`` or ``sync`` write (``replication=``, or
    the collection's write level), the regions that had applied it when it was answered
    (this one first) and those that had not yet; None when the server did not say (an
    ``async`` write). Over several batches, ``regions`` are those that have every batch
    and ``missing`` those that lack one.
    """

    token: Token
    written: int
    batches: int = 1
    regions: Optional[List[str]] = None
    missing: Optional[List[str]] = None

    def merge(self, other: "WriteResult") -> "WriteResult":
        regions, missing = self.regions, self.missing
        if regions is None:
            regions = other.regions
        elif other.regions is not None:
            regions = [r for r in regions if r in other.regions]
        if missing is None:
            missing = other.missing
        elif other.missing is not None:
            missing = missing + [r for r in other.missing if r not in missing]
        if regions is not None and missing is not None:
            # A region one batch reached and another did not lacks part of the write.
            regions = [r for r in regions if r not in missing]
        return WriteResult(
            token=self.token.merge(other.token),
            written=self.written + other.written,
            batches=self.batches + other.batches,
            regions=regions,
            missing=missing,
        )


ConsistencyLike = Union[Consistency, Token, WriteResult, Mapping[Any, int]]


def as_consistency(value: Optional[ConsistencyLike]) -> Optional[Consistency]:
    """A :class:`Consistency` from what a caller may pass: one, a token, a write's answer
    or a ``{partition: offset}`` mapping."""
    if value is None or isinstance(value, Consistency):
        return value
    if isinstance(value, WriteResult):
        return Consistency(after=value.token)
    if isinstance(value, Mapping):
        return Consistency(after=Token(value))
    raise TypeError(f"consistency must be a Consistency, a Token or a WriteResult, got {type(value).__name__}")


@dataclass(frozen=True)
class RingRange:
    """A range of ring positions ``[start, end)``; ``end`` None is the end of the ring."""

    start: int
    end: Optional[int]

    @classmethod
    def from_json(cls, value: Any) -> "RingRange":
        value = value or {}
        end = value.get("end")
        return cls(start=int(value.get("start", 0)), end=None if end is None else int(end))


@dataclass(frozen=True)
class Hit:
    """One search hit. ``score`` is higher-is-closer for every distance (cosine
    similarity, negated euclidean distance, dot product). ``payload`` is None when the
    vector has none or the search asked for none. ``tenant`` is the tenant the search was
    restricted to (the server's hits do not name a tenant; a search without one may
    return vectors of any tenant, and then ``tenant`` is None)."""

    id: str
    score: float
    payload: Optional[JsonObject] = None
    tenant: Optional[str] = None


@dataclass(frozen=True)
class SearchResult:
    """The answer to a search: hits best first, the number of shards searched, the
    shard-map epoch that served it and the server's time in microseconds. Iterating it
    (or indexing it) goes over the hits."""

    hits: List[Hit]
    shards: int
    epoch: int
    took_us: int
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index: int) -> Hit:
        return self.hits[index]

    @property
    def ids(self) -> List[str]:
        return [h.id for h in self.hits]


@dataclass(frozen=True)
class BatchSearchResult:
    """The answer to a batch search: per query, in the request's order, its exact hits,
    best first; where the batch ran (``ran_on``: "cpu" or "gpu") and why, the queries
    answered, the shards searched, the shard-map epoch and the server's time in
    microseconds. ``node`` (the node that searched) and ``forwarded_by`` come with the
    HTTP API's answer only (None over gRPC). Iterating it (or indexing it) goes over the
    queries' hit lists."""

    results: List[List[Hit]]
    ran_on: str
    why: str
    queries: int
    shards: int
    epoch: int
    took_us: int
    node: Optional[str] = field(default=None, compare=False)
    forwarded_by: Optional[str] = field(default=None, compare=False)
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[List[Hit]]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> List[Hit]:
        return self.results[index]


@dataclass(frozen=True)
class StoredVector:
    """One stored vector as ``GET /collections/{c}/vectors/{id}`` answers it."""

    id: str
    vector: List[float]
    payload: Optional[JsonObject]
    tenant: Optional[str]
    shard: Optional[int]
    range: RingRange
    epoch: int
    #: The winning write: its hybrid logical clock, the region that accepted it, and
    #: whether it met a concurrent write of another region (multi-region).
    hlc: Optional[int] = None
    origin: Optional[str] = None
    concurrent: bool = False


@dataclass(frozen=True)
class CollectionSpec:
    """A collection's settings. ``placement`` is the placement strategy as the server
    spells it (``{"strategy": "load"}``), None for the default (balanced); ``merge`` how
    writes of one id merge: "lww" (the newest wins whole) or "crdt" (payloads merge per
    field)."""

    name: str
    dimension: int
    distance: str
    partitions: int
    replication: int
    placement: Optional[JsonObject] = None
    merge: str = "lww"

    @classmethod
    def from_json(cls, value: JsonObject) -> "CollectionSpec":
        return cls(
            name=str(value["name"]),
            dimension=int(value["dimension"]),
            distance=str(value.get("distance", "cosine")),
            partitions=int(value.get("partitions", 0)),
            replication=int(value.get("replication", 1)),
            placement=value.get("placement"),
            merge=str(value.get("merge", "lww")),
        )


@dataclass(frozen=True)
class CreateResult:
    """The answer to creating a collection: its settings, and whether this call created
    it (``False``: it already existed with the same settings)."""

    spec: CollectionSpec
    created: bool


@dataclass(frozen=True)
class ShardInfo:
    """A shard of a collection's map. The fields after ``tier`` are this node's facts and
    are None for shards it does not hold."""

    range: RingRange
    replicas: List[str]
    tier: str
    shard: Optional[int] = None
    engine: Optional[str] = None
    vectors: Optional[int] = None
    pending: Optional[int] = None
    next_offset: Optional[int] = None
    lag: Optional[int] = None
    dead_lettered: Optional[int] = None
    #: How the shard came to this node (newer servers): "local", "log" or "snapshot".
    origin: Optional[str] = None

    @classmethod
    def from_json(cls, value: JsonObject) -> "ShardInfo":
        return cls(
            range=RingRange.from_json(value.get("range")),
            replicas=list(value.get("replicas") or []),
            tier=str(value.get("tier", "")),
            shard=value.get("shard"),
            engine=value.get("engine"),
            vectors=value.get("vectors"),
            pending=value.get("pending"),
            next_offset=value.get("next_offset"),
            lag=value.get("lag"),
            dead_lettered=value.get("dead_lettered"),
            origin=value.get("origin"),
        )


@dataclass(frozen=True)
class CollectionInfo:
    """``GET /collections/{c}``: settings, the shard map and, for the shards the answering
    node holds, their size and lag. ``vectors`` sums that node's shards; ``complete`` says
    whether it holds them all (then ``vectors`` is the collection's size)."""

    name: str
    settings: Optional[CollectionSpec]
    epoch: Optional[int]
    incarnation: Optional[int]
    vectors: int
    complete: bool
    shards: List[ShardInfo]
    targets: List[JsonObject]
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ClusterShard:
    """A shard in the cluster view, with the kinetic planner's load figures."""

    shard: int
    range: RingRange
    replicas: List[str]
    tier: str
    node: Optional[str]
    vectors: Optional[int]
    lag: Optional[int]
    hotness: float
    qps_1m: float
    p99_ms: float
    writes_1m: int
    hot: bool
    cold: bool

    @classmethod
    def from_json(cls, value: JsonObject) -> "ClusterShard":
        return cls(
            shard=int(value.get("shard", 0)),
            range=RingRange.from_json(value.get("range")),
            replicas=list(value.get("replicas") or []),
            tier=str(value.get("tier", "")),
            node=value.get("node"),
            vectors=value.get("vectors"),
            lag=value.get("lag"),
            hotness=float(value.get("hotness") or 0.0),
            qps_1m=float(value.get("qps_1m") or 0.0),
            p99_ms=float(value.get("p99_ms") or 0.0),
            writes_1m=int(value.get("writes_1m") or 0),
            hot=bool(value.get("hot")),
            cold=bool(value.get("cold")),
        )


@dataclass(frozen=True)
class ClusterCollection:
    name: str
    partitions: int
    replication: int
    epoch: Optional[int]
    shards: List[ClusterShard]
    targets: List[JsonObject]


@dataclass(frozen=True)
class Member:
    """A node of the cluster as the answering node sees it."""

    address: str
    alive: bool
    leaving: bool


@dataclass(frozen=True)
class ClusterView:
    """``GET /cluster``: the answering node, per collection its shards with replicas,
    tiers and hotness, the members, the planner's state, node loads, decisions and the
    controller's recent map changes."""

    node: str
    collections: List[ClusterCollection]
    members: Dict[str, Member]
    planner: Optional[JsonObject]
    nodes: List[JsonObject]
    decisions: List[JsonObject]
    map_changes: List[JsonObject]
    raw: JsonObject = field(default_factory=dict, repr=False, compare=False)
    #: The other regions this node's shards merge (``region``, ``shards``, ``behind``,
    #: ``newest_merged_ms``, ``oldest_merged_ms``); empty in one region.
    regions: List[JsonObject] = field(default_factory=list)

    def collection(self, name: str) -> Optional[ClusterCollection]:
        return next((c for c in self.collections if c.name == name), None)


@dataclass(frozen=True)
class Health:
    """``GET /health``: ``ok`` False (a 503) names the shards whose consumer is failing."""

    ok: bool
    status: str
    failing: List[JsonObject]


@dataclass(frozen=True)
class Ready:
    """``GET /ready``: ready when every shard the maps give the node is open and caught
    up; otherwise ``waiting`` and ``failing`` say which are not."""

    ready: bool
    shards: int
    waiting: List[JsonObject]
    failing: List[JsonObject]


@dataclass(frozen=True)
class Upsert:
    """One upsert of a write batch (see ``Client.write``)."""

    id: str
    vector: Sequence[float]
    tenant: Optional[str] = None
    payload: Optional[Mapping[str, Any]] = None


@dataclass(frozen=True)
class Delete:
    """One delete of a write batch: a vector is its tenant and id together."""

    id: str
    tenant: Optional[str] = None

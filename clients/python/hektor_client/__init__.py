"""A Python client of hektor's HTTP API (and of its gRPC API for searches and writes).

>>> from hektor_client import Client
>>> hk = Client("http://127.0.0.1:7070", api_key=None)
>>> hk.create_collection("docs", dimension=384, distance="cosine", partitions=8)
>>> written = hk.upsert_many("docs", ids, vectors)   # a numpy 2-D array, or lists
>>> for hit in hk.search("docs", query, k=10, consistency=written):
...     print(hit.id, hit.score, hit.payload)

``Client`` blocks; ``AsyncClient`` has the same methods for asyncio. Every refusal of the
server is a :class:`HektorError` with its HTTP ``status`` and the server's ``message``.
numpy is optional: vectors may be lists of numbers or numpy arrays.

Every write takes ``replication="async" | "quorum" | "sync"`` (how many regions must have
applied it before it is answered) and ``replication_timeout_ms``; its ``WriteResult``
then names the ``regions`` that have it and those ``missing``, and a level not reached in
time is a :class:`ReplicationTimeout` (504; the write is durable in this region).

``Client(url, grpc="HOST:PORT")`` (the node's ``--grpc-listen``) sends searches, batch
searches and writes over gRPC, with the same results and errors; that needs grpcio
(``pip install 'hektor-client[grpc]'``).
"""

from ._calls import MAX_BATCH_ITEMS, MAX_BODY_BYTES
from ._client import AsyncClient, Client
from ._errors import HektorConnectionError, HektorError, ReplicationTimeout
from ._types import (
    BatchSearchResult,
    ClusterCollection,
    ClusterShard,
    ClusterView,
    CollectionInfo,
    CollectionSpec,
    Consistency,
    CreateResult,
    Delete,
    Health,
    Hit,
    Member,
    Ready,
    RingRange,
    SearchResult,
    ShardInfo,
    StoredVector,
    Token,
    Upsert,
    WriteResult,
)
from ._version import __version__

__all__ = [
    "AsyncClient",
    "BatchSearchResult",
    "Client",
    "ClusterCollection",
    "ClusterShard",
    "ClusterView",
    "CollectionInfo",
    "CollectionSpec",
    "Consistency",
    "CreateResult",
    "Delete",
    "HektorConnectionError",
    "HektorError",
    "Health",
    "Hit",
    "MAX_BATCH_ITEMS",
    "MAX_BODY_BYTES",
    "Member",
    "Ready",
    "ReplicationTimeout",
    "RingRange",
    "SearchResult",
    "ShardInfo",
    "StoredVector",
    "Token",
    "Upsert",
    "WriteResult",
    "__version__",
]

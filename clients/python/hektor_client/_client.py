"""``Client`` (blocking) and ``AsyncClient`` (asyncio), both on httpx, and with ``grpc=``
on grpcio for searches, batch searches and writes.

The two have the same methods with the same arguments; what each call sends and how its
answer is read lives in ``_calls`` (HTTP) and ``_grpc`` (gRPC, the same functions) and is
shared, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence, TypeVar, Union

import httpx

from . import _calls, _grpc
from ._calls import Call, IdLike, MatrixLike, TenantArg, VectorLike
from ._grpc import GrpcCall
from ._errors import HektorConnectionError, HektorError
from ._version import __version__
from ._types import (
    BatchSearchResult,
    ClusterView,
    CollectionInfo,
    CollectionSpec,
    ConsistencyLike,
    CreateResult,
    Delete,
    Health,
    JsonObject,
    Ready,
    SearchResult,
    StoredVector,
    Token,
    Upsert,
    WriteResult,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
#: Longest pause a retry honours from a server's Retry-After.
MAX_RETRY_PAUSE = 5.0


class _Base:
    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        retries: int = 2,
        verify: Union[bool, str] = True,
        headers: Optional[Mapping[str, str]] = None,
        grpc: Optional[str] = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._headers: Dict[str, str] = {
            "accept": "application/json",
            "content-type": "application/json",
            "user-agent": f"hektor-client-python/{__version__}",
        }
        if api_key:
            # access/src/gate.rs: `Authorization: Bearer <key>`.
            self._headers["authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})
        self._verify = verify
        #: The gRPC listener searches and writes go to (``grpc=``), or None: all over HTTP.
        self.grpc: Optional[str] = None if grpc is None else _grpc.target_of(grpc)
        # Where searches, batch searches and writes are made: the same functions, for HTTP
        # or for gRPC.
        self._ops: Any = _calls if grpc is None else _grpc

    def __repr__(self) -> str:
        if self.grpc is not None:
            return f"{type(self).__name__}({self.url!r}, grpc={self.grpc!r})"
        return f"{type(self).__name__}({self.url!r})"

    def _pause(self, call: Union[Call[Any], GrpcCall[Any]], error: HektorError, attempt: int) -> Optional[float]:
        """Seconds to wait before trying ``call`` again after ``error``, or None: a 429 is
        refused before any work is done, so every call retries it; a 503 (node busy, not
        ready, or the request timed out there) only read-only calls."""
        if attempt >= self.retries:
            return None
        if error.status == 429 or (error.status == 503 and call.read_only):
            if error.retry_after is not None:
                return min(max(error.retry_after, 0.0), MAX_RETRY_PAUSE)
            backoff: float = 0.1 * 2.0**attempt * (1.0 + random.random())
            return min(backoff, MAX_RETRY_PAUSE)
        return None

    def _finish(self, call: Call[T], response: httpx.Response) -> T:
        status = response.status_code
        if 200 <= status < 300 or status in call.also_ok:
            try:
                body = _calls.decode(response.content, call.text)
            except ValueError as err:
                raise HektorError(
                    status,
                    f"the answer is not JSON: {err}",
                    method=call.method,
                    url=str(response.request.url),
                    body=response.text,
                ) from err
            return call.parse(status, body)
        raise _calls.error_from(status, response.content, response.headers, call.method, str(response.request.url))

    def _timeout(self, call: Union[Call[Any], GrpcCall[Any]]) -> Optional[float]:
        if call.timeout is not None:
            return call.timeout
        if self.timeout is not None and call.wait is not None:
            # The server may wait this long (a write waiting for other regions): the
            # request outlasts it, so its answer (or its 504) is not lost.
            return max(self.timeout, call.wait + 5.0)
        return self.timeout

    @staticmethod
    def _no_answer(call: Call[Any], url: str, err: httpx.HTTPError) -> HektorConnectionError:
        kind = "timed out" if isinstance(err, httpx.TimeoutException) else "failed"
        return HektorConnectionError(f"{call.method} {url} {kind}: {err!r}", method=call.method, url=url)


class Client(_Base):
    """A blocking client of one hektor node.

    >>> with Client("http://127.0.0.1:7070") as hk:
    ...     hk.create_collection("docs", dimension=384)
    ...     written = hk.upsert_many("docs", ids, vectors)          # numpy 2-D array or lists
    ...     hits = hk.search("docs", query, k=5, consistency=written)  # sees those writes

    ``api_key`` is sent as ``Authorization: Bearer <key>``. ``timeout`` (seconds) bounds
    each request (a search that waits for a write token gets at least the wait plus 5 s).
    ``retries``: how many times a request refused with 429 (overloaded), or a read
    answered 503, is tried again after the server's ``Retry-After``. ``verify``: TLS
    verification, or the path of a CA bundle for a node serving HTTPS with a private CA.
    Every refusal is a :class:`HektorError` with the status and the server's message.

    ``grpc``: the node's gRPC listener, ``"HOST:PORT"`` as given to ``hektor serve
    --grpc-listen``. Searches, batch searches and writes then go over gRPC (binary: packed
    floats, no JSON) with the same results and the same HektorErrors (``status`` is the
    HTTP status of the same failure, ``grpc_code`` the gRPC code); everything else stays
    on HTTP. It needs grpcio (``pip install 'hektor-client[grpc]'``); the listener is
    plain TCP, without TLS.
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        retries: int = 2,
        verify: Union[bool, str] = True,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.BaseTransport] = None,
        grpc: Optional[str] = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retries=retries, verify=verify, headers=headers, grpc=grpc)
        self._channel = None if grpc is None else _grpc.Channel(grpc, self._headers)
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=timeout, verify=verify, transport=transport
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Client":
        """A client of ``$HEKTOR_URL`` (default http://127.0.0.1:7070) with the key in
        ``$HEKTOR_API_KEY`` and the gRPC listener in ``$HEKTOR_GRPC``, if set."""
        kwargs.setdefault("grpc", os.environ.get("HEKTOR_GRPC") or None)
        return cls(
            os.environ.get("HEKTOR_URL", "http://127.0.0.1:7070"), os.environ.get("HEKTOR_API_KEY") or None, **kwargs
        )

    def close(self) -> None:
        self._http.close()
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def _send(self, call: Union[Call[T], GrpcCall[T]]) -> T:
        if isinstance(call, GrpcCall):
            return self._send_grpc(call)
        attempt = 0
        while True:
            url = self.url + call.path
            try:
                response = self._http.request(
                    call.method, call.path, content=call.body, params=call.params, timeout=self._timeout(call)
                )
            except httpx.HTTPError as err:
                raise self._no_answer(call, url, err) from err
            try:
                return self._finish(call, response)
            except HektorError as error:
                pause = self._pause(call, error, attempt)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    def _send_grpc(self, call: GrpcCall[T]) -> T:
        assert self._channel is not None
        attempt = 0
        while True:
            try:
                return call.parse(self._channel.call(call, self._timeout(call)))
            except HektorError as error:
                pause = self._pause(call, error, attempt)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    def _send_all(self, calls: Iterable[Union[Call[WriteResult], GrpcCall[WriteResult]]]) -> WriteResult:
        total: Optional[WriteResult] = None
        for call in calls:
            try:
                result = self._send(call)
            except HektorError as error:
                error.partial = total
                raise
            total = result if total is None else total.merge(result)
        return total if total is not None else WriteResult(Token(), 0, 0)

    # ----- node -----

    def health(self) -> Health:
        """``GET /health``: ``ok`` is False (not an exception) when a shard is failing."""
        return self._send(_calls.health())

    def ready(self) -> Ready:
        """``GET /ready``: ``ready`` is False (not an exception) while shards open or
        catch up."""
        return self._send(_calls.ready())

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Ready:
        """Poll ``/ready`` until the node is ready; a HektorError 503 after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.ready()
            if state.ready:
                return state
            if time.monotonic() >= deadline:
                raise HektorError(503, f"not ready after {timeout} s: waiting for {state.waiting}, failing {state.failing}")
            time.sleep(interval)

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text."""
        return self._send(_calls.metrics())

    def cluster(self) -> ClusterView:
        """``GET /cluster``: shard maps with replicas, tiers and hotness, members, the
        planner's decisions and recent map changes."""
        return self._send(_calls.cluster())

    # ----- collections -----

    def list_collections(self) -> List[CollectionSpec]:
        """``GET /collections``: every collection's settings, by name."""
        return self._send(_calls.list_collections())

    def get_collection(self, name: str) -> CollectionInfo:
        """``GET /collections/{name}``: settings, shard map, size and lag per shard."""
        return self._send(_calls.get_collection(name))

    def create_collection(
        self,
        name: str,
        dimension: int,
        *,
        distance: Optional[str] = None,
        partitions: Optional[int] = None,
        replication: Optional[int] = None,
        placement: Optional[Mapping[str, Any]] = None,
        merge: Optional[str] = None,
    ) -> CreateResult:
        """``PUT /collections/{name}``. ``distance``: "cosine" (the server's default),
        "euclidean" or "dot"; ``partitions`` (default 8), ``replication`` (default 1),
        ``placement`` e.g. ``{"strategy": "load"}``, ``merge`` "lww" (default) or "crdt"
        (payloads merge per field). Creating it again with the same settings is fine
        (``created`` False); with other settings it is a 409."""
        return self._send(
            _calls.create_collection(name, dimension, distance, partitions, replication, placement, merge)
        )

    def drop_collection(self, name: str, *, missing_ok: bool = False) -> bool:
        """``DELETE /collections/{name}``: True when dropped; an unknown name is a 404
        HektorError, or False with ``missing_ok``."""
        return self._send(_calls.drop_collection(name, missing_ok))

    def request_plan(self, collection: str, action: Mapping[str, Any]) -> JsonObject:
        """``POST /cluster/collections/{c}/plan``: ask the controller for a split, merge,
        move or tier change, e.g. ``{"action": "set_tier", "shard": {"start": 0, "end":
        None}, "tier": "warm"}`` (an admin key's call). Answers what was requested and at
        which epoch; watch :meth:`cluster` for it to happen."""
        return self._send(_calls.request_plan(collection, action))

    # ----- writes -----

    def upsert(
        self,
        collection: str,
        id: IdLike,
        vector: VectorLike,
        *,
        tenant: Optional[str] = None,
        payload: Optional[Mapping[str, Any]] = None,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """Insert or replace one vector (a vector is its tenant and id together).

        ``replication``: the write level, how many regions must have applied the write
        before it is answered: ``"async"`` (durable in this region's log), ``"quorum"``
        (a majority of all regions, this one counted) or ``"sync"`` (every region);
        None: the collection's own level (``async`` unless set). With ``quorum`` or
        ``sync`` the result's ``regions`` and ``missing`` say which regions had it.
        ``replication_timeout_ms``: how long the server waits for the other regions
        (1 to 120,000; default 10,000); a level not reached by then is a
        :class:`ReplicationTimeout` (504), the write being durable here all the same.
        The same two arguments on every write (``upsert_many``, ``write``, ``delete``)."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return self._send(self._ops.upsert_one(collection, id, vector, tenant, payload, options=options))

    def upsert_many(
        self,
        collection: str,
        ids: Iterable[Any],
        vectors: MatrixLike,
        *,
        tenant: TenantArg = None,
        payloads: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
        batch_size: int = _calls.DEFAULT_BATCH_SIZE,
        max_body_bytes: int = _calls.DEFAULT_MAX_BODY_BYTES,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """Upsert rows of a 2-D numpy array (or a sequence of vectors) under ``ids``, in
        writes of at most ``batch_size`` rows (the server takes 10,000) and
        ``max_body_bytes`` of JSON (it takes 64 MiB). ``tenant``: one for all rows or one
        per row; ``payloads``: one mapping (or None) per row. Answers the merged token of
        all the writes. The batches are separate writes: if one fails, the HektorError's
        ``partial`` is the result of those written before it. (Over gRPC ``max_body_bytes``
        counts the bytes of each Write message.) ``replication`` and
        ``replication_timeout_ms`` as for :meth:`upsert`, for each batch; the result's
        ``regions`` are those that have every batch."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return self._send_all(
            self._ops.upsert_batches(
                collection, ids, vectors, tenant, payloads, batch_size, max_body_bytes, options=options
            )
        )

    def write(
        self,
        collection: str,
        upserts: Sequence[Union[Upsert, Mapping[str, Any]]] = (),
        deletes: Sequence[Union[str, int, Delete, Mapping[str, Any]]] = (),
        *,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """One write of upserts and deletes together, checked whole by the server (all or
        nothing). Items are :class:`Upsert`/:class:`Delete` or dicts of the same fields.
        ``replication`` and ``replication_timeout_ms`` as for :meth:`upsert`."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return self._send(self._ops.write_batch(collection, upserts, deletes, options=options))

    def delete(
        self,
        collection: str,
        ids: Union[IdLike, Iterable[Any]],
        *,
        tenant: Optional[str] = None,
        batch_size: int = _calls.MAX_BATCH_ITEMS,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """Delete one id or many (of ``tenant``, or written without a tenant).
        ``replication`` and ``replication_timeout_ms`` as for :meth:`upsert`."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return self._send_all(self._ops.delete_batches(collection, ids, tenant, batch_size, options=options))

    # ----- reads -----

    def get(self, collection: str, id: IdLike, *, tenant: Optional[str] = None) -> StoredVector:
        """``GET /collections/{c}/vectors/{id}[?tenant=t]``; a 404 HektorError when there
        is no such vector. (The server offers no consistency wait here: to read your own
        write, search with its token first, or retry.)"""
        return self._send(_calls.get_vector(collection, id, tenant))

    def search(
        self,
        collection: str,
        vector: VectorLike,
        k: int = 10,
        *,
        tenant: Optional[str] = None,
        consistency: Optional[ConsistencyLike] = None,
        with_payload: bool = True,
        effort: Optional[int] = None,
        rescore: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> SearchResult:
        """The ``k`` (1 to 1,000) nearest vectors, best first.

        ``tenant``: search only that tenant's vectors. ``consistency``: a write's
        :class:`WriteResult`, its :class:`Token`, or a :class:`Consistency` (token and
        wait): the search then sees those writes, or fails with a 504 after the wait.
        ``effort``: this search's beam width (more recall, more time); ``rescore=False``
        lets warm-tier shards score from their int8 codes. ``timeout``: this request's
        own timeout in seconds."""
        return self._send(
            self._ops.search(
                collection, vector, k, tenant, consistency, with_payload, effort, rescore, timeout, self.timeout
            )
        )

    def search_batch(
        self,
        collection: str,
        vectors: MatrixLike,
        k: int = 10,
        *,
        tenant: Optional[str] = None,
        with_payload: bool = True,
        device: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> BatchSearchResult:
        """The exact ``k`` nearest vectors of each of many queries (1 to 10,000; rows of a
        2-D numpy array or a sequence of vectors), in one request
        (``POST /collections/{c}/search/batch``, or gRPC ``SearchBatch``). Per query, in
        order, a list of :class:`Hit` best first. ``device``: "auto" (the server's routing
        rule, the default), "cpu" or "gpu". The server takes at most 2 MiB of request: a
        larger batch is a 413 HektorError (split it)."""
        return self._send(self._ops.search_batch(collection, vectors, k, tenant, with_payload, device, timeout))


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`: the same methods, awaited.

    >>> async with AsyncClient("http://127.0.0.1:7070") as hk:
    ...     written = await hk.upsert_many("docs", ids, vectors, concurrency=4)
    ...     hits = await hk.search("docs", query, consistency=written)

    Requests run on httpx's non-blocking connection pool (no threads), so many searches
    can be awaited at once with ``asyncio.gather``. With ``grpc="HOST:PORT"`` searches,
    batch searches and writes go over ``grpc.aio`` instead (see :class:`Client`).
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        retries: int = 2,
        verify: Union[bool, str] = True,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        grpc: Optional[str] = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retries=retries, verify=verify, headers=headers, grpc=grpc)
        self._channel = None if grpc is None else _grpc.AioChannel(grpc, self._headers)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=timeout, verify=verify, transport=transport
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> "AsyncClient":
        """A client of ``$HEKTOR_URL`` with the key in ``$HEKTOR_API_KEY`` and the gRPC
        listener in ``$HEKTOR_GRPC``, if set."""
        kwargs.setdefault("grpc", os.environ.get("HEKTOR_GRPC") or None)
        return cls(
            os.environ.get("HEKTOR_URL", "http://127.0.0.1:7070"), os.environ.get("HEKTOR_API_KEY") or None, **kwargs
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.aclose()

    async def _send(self, call: Union[Call[T], GrpcCall[T]]) -> T:
        if isinstance(call, GrpcCall):
            return await self._send_grpc(call)
        attempt = 0
        while True:
            url = self.url + call.path
            try:
                response = await self._http.request(
                    call.method, call.path, content=call.body, params=call.params, timeout=self._timeout(call)
                )
            except httpx.HTTPError as err:
                raise self._no_answer(call, url, err) from err
            try:
                return self._finish(call, response)
            except HektorError as error:
                pause = self._pause(call, error, attempt)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def _send_grpc(self, call: GrpcCall[T]) -> T:
        assert self._channel is not None
        attempt = 0
        while True:
            try:
                return call.parse(await self._channel.call(call, self._timeout(call)))
            except HektorError as error:
                pause = self._pause(call, error, attempt)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def _send_all(
        self, calls: Iterable[Union[Call[WriteResult], GrpcCall[WriteResult]]], concurrency: int = 1
    ) -> WriteResult:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        total: Optional[WriteResult] = None
        failure: Optional[BaseException] = None
        pending: "set[asyncio.Task[WriteResult]]" = set()

        def collect(done: "Iterable[asyncio.Task[WriteResult]]") -> None:
            nonlocal total, failure
            for task in done:
                err = task.exception()
                if err is None:
                    result = task.result()
                    total = result if total is None else total.merge(result)
                elif failure is None:
                    failure = err

        for call in calls:
            if len(pending) >= concurrency:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                collect(done)
            if failure is not None:
                break
            pending.add(asyncio.ensure_future(self._send(call)))
        if pending:
            done, _ = await asyncio.wait(pending)
            collect(done)
        if failure is not None:
            if isinstance(failure, HektorError):
                failure.partial = total
            raise failure
        return total if total is not None else WriteResult(Token(), 0, 0)

    # ----- node -----

    async def health(self) -> Health:
        return await self._send(_calls.health())

    async def ready(self) -> Ready:
        return await self._send(_calls.ready())

    async def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Ready:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self.ready()
            if state.ready:
                return state
            if loop.time() >= deadline:
                raise HektorError(503, f"not ready after {timeout} s: waiting for {state.waiting}, failing {state.failing}")
            await asyncio.sleep(interval)

    async def metrics(self) -> str:
        return await self._send(_calls.metrics())

    async def cluster(self) -> ClusterView:
        return await self._send(_calls.cluster())

    # ----- collections -----

    async def list_collections(self) -> List[CollectionSpec]:
        return await self._send(_calls.list_collections())

    async def get_collection(self, name: str) -> CollectionInfo:
        return await self._send(_calls.get_collection(name))

    async def create_collection(
        self,
        name: str,
        dimension: int,
        *,
        distance: Optional[str] = None,
        partitions: Optional[int] = None,
        replication: Optional[int] = None,
        placement: Optional[Mapping[str, Any]] = None,
        merge: Optional[str] = None,
    ) -> CreateResult:
        return await self._send(
            _calls.create_collection(name, dimension, distance, partitions, replication, placement, merge)
        )

    async def drop_collection(self, name: str, *, missing_ok: bool = False) -> bool:
        return await self._send(_calls.drop_collection(name, missing_ok))

    async def request_plan(self, collection: str, action: Mapping[str, Any]) -> JsonObject:
        return await self._send(_calls.request_plan(collection, action))

    # ----- writes -----

    async def upsert(
        self,
        collection: str,
        id: IdLike,
        vector: VectorLike,
        *,
        tenant: Optional[str] = None,
        payload: Optional[Mapping[str, Any]] = None,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """As :meth:`Client.upsert` (``replication``: the write level)."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return await self._send(self._ops.upsert_one(collection, id, vector, tenant, payload, options=options))

    async def upsert_many(
        self,
        collection: str,
        ids: Iterable[Any],
        vectors: MatrixLike,
        *,
        tenant: TenantArg = None,
        payloads: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
        batch_size: int = _calls.DEFAULT_BATCH_SIZE,
        max_body_bytes: int = _calls.DEFAULT_MAX_BODY_BYTES,
        concurrency: int = 1,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """As :meth:`Client.upsert_many`, with up to ``concurrency`` batches in flight
        (with more than one, batches may land out of order: keep an id in one batch)."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return await self._send_all(
            self._ops.upsert_batches(
                collection, ids, vectors, tenant, payloads, batch_size, max_body_bytes, options=options
            ),
            concurrency,
        )

    async def write(
        self,
        collection: str,
        upserts: Sequence[Union[Upsert, Mapping[str, Any]]] = (),
        deletes: Sequence[Union[str, int, Delete, Mapping[str, Any]]] = (),
        *,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """As :meth:`Client.write`."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return await self._send(self._ops.write_batch(collection, upserts, deletes, options=options))

    async def delete(
        self,
        collection: str,
        ids: Union[IdLike, Iterable[Any]],
        *,
        tenant: Optional[str] = None,
        batch_size: int = _calls.MAX_BATCH_ITEMS,
        replication: Optional[str] = None,
        replication_timeout_ms: Optional[int] = None,
    ) -> WriteResult:
        """As :meth:`Client.delete`."""
        options = _calls.write_options(replication, replication_timeout_ms)
        return await self._send_all(self._ops.delete_batches(collection, ids, tenant, batch_size, options=options))

    # ----- reads -----

    async def get(self, collection: str, id: IdLike, *, tenant: Optional[str] = None) -> StoredVector:
        return await self._send(_calls.get_vector(collection, id, tenant))

    async def search(
        self,
        collection: str,
        vector: VectorLike,
        k: int = 10,
        *,
        tenant: Optional[str] = None,
        consistency: Optional[ConsistencyLike] = None,
        with_payload: bool = True,
        effort: Optional[int] = None,
        rescore: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> SearchResult:
        return await self._send(
            self._ops.search(
                collection, vector, k, tenant, consistency, with_payload, effort, rescore, timeout, self.timeout
            )
        )

    async def search_batch(
        self,
        collection: str,
        vectors: MatrixLike,
        k: int = 10,
        *,
        tenant: Optional[str] = None,
        with_payload: bool = True,
        device: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> BatchSearchResult:
        return await self._send(
            self._ops.search_batch(collection, vectors, k, tenant, with_payload, device, timeout)
        )

"""The exception types of the client: :class:`HektorError` and its kinds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional

if TYPE_CHECKING:
    from ._types import Token


class HektorError(Exception):
    """A request hektor refused or could not answer.

    ``status`` is the HTTP status of the server's answer (400, 401, 403, 404, 409, 413,
    422, 429, 503, 504, ...) and ``message`` the server's own words (the ``"error"``
    field of its JSON body). A call made over gRPC gets the HTTP status the HTTP API
    gives the same failure (its gRPC code is in ``grpc_code``) and the status message,
    which is the same text. A request that got no answer at all (connection refused,
    reset, timed out) is a :class:`HektorConnectionError`, whose ``status`` is 0; a
    ``quorum`` or ``sync`` write not confirmed by enough regions in time is a
    :class:`ReplicationTimeout` (504).
    """

    status: int
    message: str
    method: str
    url: str
    body: Any
    retry_after: Optional[float]
    #: For a write sent as several batches (``upsert_many``, ``delete`` of many ids): the
    #: ``WriteResult`` of the batches written before this one failed (they stay written).
    partial: Any
    #: For a call made over gRPC: the status code's name the server answered
    #: (``"INVALID_ARGUMENT"``, ``"NOT_FOUND"``, ...); ``status`` is then the HTTP status
    #: the HTTP API gives the same failure. None for a call made over HTTP.
    grpc_code: Optional[str]

    def __init__(
        self,
        status: int,
        message: str,
        *,
        method: str = "",
        url: str = "",
        body: Any = None,
        retry_after: Optional[float] = None,
        grpc_code: Optional[str] = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.method = method
        self.url = url
        self.body = body
        self.retry_after = retry_after
        self.partial = None
        self.grpc_code = grpc_code

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        if self.grpc_code:
            where = f" (gRPC {self.grpc_code} {self.url})"
        if self.status:
            return f"HTTP {self.status}: {self.message}{where}"
        return f"{self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"

    @property
    def is_client_error(self) -> bool:
        """A 4xx: the request itself was wrong (or not allowed); retrying won't help."""
        return 400 <= self.status < 500

    @property
    def is_retryable(self) -> bool:
        """Worth trying again later: overload (429), unavailable (503), a consistency
        wait that timed out (504), or no answer at all."""
        return self.status in (0, 429, 503, 504)


class HektorConnectionError(HektorError):
    """No answer: the connection failed, was reset, or timed out (``status`` 0), over
    HTTP or gRPC."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(0, message, method=method, url=url)


class ReplicationTimeout(HektorError):
    """A ``quorum`` or ``sync`` write that not enough regions confirmed in time (HTTP 504,
    gRPC ``DEADLINE_EXCEEDED``): the write **is durable in the region that took it** and
    still reaches the others; it is only not reported as replicated. Resending it writes
    it again (``is_retryable`` is False): to wait for it elsewhere, search with its
    ``token`` and a consistency level instead.

    ``token``: the write token (as :attr:`WriteResult.token`); ``written``: the upserts
    and deletes it wrote; ``regions``: the regions that had applied it when the wait
    ended (this one first); ``missing``: those that had not. The token alone is a
    search's ``consistency`` (read-your-writes) as a :class:`WriteResult` is. Over HTTP all four come from
    the 504's body. Over gRPC they are read from the status message (the server names
    the regions and the token there, in its own notation); ``written`` is then None, as
    is any part the message did not hold in the expected form.

    For a write sent as several batches (``upsert_many``, ``delete`` of many ids) these
    describe the batch that timed out; ``partial`` is what the batches before it wrote.
    """

    token: Optional["Token"]
    written: Optional[int]
    regions: Optional[List[str]]
    missing: Optional[List[str]]

    def __init__(
        self,
        message: str,
        *,
        token: Optional["Token"] = None,
        written: Optional[int] = None,
        regions: Optional[List[str]] = None,
        missing: Optional[List[str]] = None,
        method: str = "",
        url: str = "",
        body: Any = None,
        grpc_code: Optional[str] = None,
    ) -> None:
        super().__init__(504, message, method=method, url=url, body=body, grpc_code=grpc_code)
        self.token = token
        self.written = written
        self.regions = regions
        self.missing = missing

    @property
    def is_retryable(self) -> bool:
        """False: the write is durable already; resending it would write it again."""
        return False

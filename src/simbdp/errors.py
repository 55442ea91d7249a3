"""The one exception tree of simbdp.

    SimbdpError
    ├── ConfigError            invalid platform config or tenant profile (names file and field)
    ├── TransientError         safe to retry later (sink or broker down, lock busy)
    │   ├── QuotaExceeded      a daily quota is used up; retry after ``retry_after_secs``
    │   ├── SinkUnavailable    the sink cannot be reached or failed transiently
    │   ├── BrokerUnavailable  the broker cannot be reached
    │   ├── ServerUnreachable  the simbdp API server cannot be reached (clients: push)
    │   │   └── PublishInterrupted  it went away mid-publish: ``confirmed`` of ``total`` are in
    │   └── DuplicateMessages  a concurrent commit took some message ids; filter and retry
    └── TerminalError          the input itself is at fault; retrying cannot help
        ├── Rejected           a constraint check refused the file or message before any work
        ├── FormatError        the input cannot be parsed (names the line or row)
        ├── SchemaError        the data does not fit the target table
        ├── DuplicateIngestion the same content was committed before (ledger hit)
        ├── AppFailed          the tenant app raised, hung, crashed or returned a wrong shape
        ├── AuthError          wrong, missing or revoked credentials, or another tenant's resource
        └── CredentialsIssued  a tenant's broker secret was handed out already (rotate it)

Every message names the tenant, the file or message, and what is wrong.
"""

from __future__ import annotations

__all__ = [
    "AppFailed",
    "AuthError",
    "BrokerUnavailable",
    "ConfigError",
    "CredentialsIssued",
    "DuplicateIngestion",
    "DuplicateMessages",
    "FormatError",
    "KeyConflict",
    "PublishInterrupted",
    "QuotaExceeded",
    "Rejected",
    "SchemaError",
    "ServerUnreachable",
    "SimbdpError",
    "SinkUnavailable",
    "TerminalError",
    "TransientError",
]


class SimbdpError(Exception):
    """Base of every error simbdp raises on purpose."""

    #: a stable machine-readable code, used by the API and the records
    code: str = "error"


class ConfigError(SimbdpError):
    """A platform config or tenant profile is invalid.

    ``problems`` lists ``(file, field, message)`` triples, one per error found.
    """

    code = "invalid_config"

    def __init__(self, message: str, problems: list[tuple[str, str, str]] | None = None):
        self.problems = problems or []
        super().__init__(message)


class TransientError(SimbdpError):
    """Safe to retry: the same input may succeed later."""

    code = "transient"


class QuotaExceeded(TransientError):
    code = "quota_exceeded"

    def __init__(self, tenant: str, limit: str, retry_after_secs: float):
        self.tenant, self.limit, self.retry_after_secs = tenant, limit, retry_after_secs
        super().__init__(f"tenant {tenant!r} exceeded {limit}; retry in {retry_after_secs:.0f}s")


class SinkUnavailable(TransientError):
    code = "sink_unavailable"


class BrokerUnavailable(TransientError):
    code = "broker_unavailable"


class ServerUnreachable(TransientError):
    """A client (``simbdp push``) cannot reach the simbdp API server."""

    code = "server_unreachable"


class PublishInterrupted(BrokerUnavailable):
    """The broker failed mid-publish: the first ``confirmed`` of ``total`` messages are on
    the broker, the rest may or may not be. Publishing them all again is safe (same ids)."""

    def __init__(self, tenant: str, confirmed: int, total: int, reason: str):
        self.tenant, self.confirmed, self.total = tenant, confirmed, total
        super().__init__(f"tenant {tenant!r}: the broker failed after {confirmed} of {total} "
                         f"message(s) were confirmed: {reason}")


class DuplicateMessages(TransientError):
    code = "duplicate_messages"


class TerminalError(SimbdpError):
    """The input is at fault: it goes to rejected/, failed/ or the dead-letter queue."""

    code = "terminal"


class Rejected(TerminalError):
    """A constraint check refused the input before any work was done."""

    code = "rejected"

    def __init__(self, message: str, code: str = "rejected"):
        self.code = code
        super().__init__(message)


class FormatError(TerminalError):
    code = "bad_format"


class SchemaError(TerminalError):
    code = "bad_schema"


class KeyConflict(SchemaError):
    """A fast append into a keyed table met a key already there or repeated: the rows must be
    written again as upserts."""

    code = "key_conflict"


class DuplicateIngestion(TerminalError):
    code = "duplicate"


class AppFailed(TerminalError):
    """The tenant app failed; ``kind`` is load, raised, timeout, memory, crashed or bad_output."""

    code = "app_failed"

    def __init__(self, message: str, kind: str = "raised"):
        self.kind = kind
        super().__init__(message)


class AuthError(TerminalError):
    code = "unauthorized"


class CredentialsIssued(TerminalError):
    """A tenant's broker user exists and its secret was shown once; only a rotation makes a
    new one (simbdp keeps no copy)."""

    code = "credentials_issued"

    def __init__(self, tenant: str, username: str):
        self.tenant, self.username = tenant, username
        super().__init__(f"tenant {tenant!r}: broker user {username!r} exists and its secret "
                         "was handed out when it was created; simbdp keeps no copy. Rotate "
                         "(--rotate, or rotate=true) to get a new one; the old one stops working")

"""NATS users per tenant: the users file simbdp writes for nats-server to ``include``.

The file (``broker.nats_auth_file``, mode 0600) holds one ``authorization`` block: the platform
user of the broker URL with full rights, and per tenant a user ``<prefix>-<tenant>`` allowed
only on the tenant's own subjects and JetStream API subjects of its own stream, and on replies
under its own inbox prefix ``_INBOX_<tenant>``. Passwords are bcrypt hashes; the file is the
only place they are kept, one user per line as JSON (which the NATS config syntax accepts), so
it is read back before each rewrite. After a rewrite the server is reloaded with SIGHUP to the
pid in ``broker.nats_pid_file`` (what ``nats-server --signal reload=<pid file>`` does); users
change without a restart.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import bcrypt

from simbdp.errors import ConfigError

__all__ = ["NatsUsers", "tenant_permissions"]

_HEADER = ("# Written by simbdp: NATS users, one per line as JSON; passwords are bcrypt hashes.\n"
           "# Rewritten whenever a tenant's broker user is created or rotated: do not edit.\n")
_ROUNDS = 11  # nats-server checks the hash at every connect; 11 is the `nats` tool's default


def tenant_permissions(prefix: str, tenant: str, stream: str) -> dict[str, Any]:
    """What a tenant's user may do: its own subjects, its own stream's JetStream API (info,
    pull, ack) and replies under its own inbox prefix; nothing else."""
    own, inbox = f"{prefix}.{tenant}.>", f"_INBOX_{tenant}.>"
    return {
        "publish": {"allow": [own, f"$JS.API.STREAM.INFO.{stream}",
                              f"$JS.API.CONSUMER.INFO.{stream}.>",
                              f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>", f"$JS.ACK.{stream}.>"]},
        "subscribe": {"allow": [own, inbox]},
    }


class NatsUsers:
    """The users file: read, add or rotate a user, write atomically, reload the server."""

    def __init__(self, path: Path, pid_file: Path | None, platform_url: str):
        self.path, self.pid_file = path, pid_file
        parts = urlsplit(platform_url)
        if not parts.username or not parts.password:
            raise ConfigError(f"broker.url {parts.scheme}://{parts.hostname}:{parts.port}: "
                              "with broker.nats_auth_file set, the URL must carry the platform "
                              "user and password (nats://user:password@host:port)")
        self.platform_user = unquote(parts.username)
        self._platform_password = unquote(parts.password).encode()

    def users(self) -> dict[str, dict[str, Any]]:
        """The users in the file, by name (empty if there is no file yet)."""
        if not self.path.exists():
            return {}
        out = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith('{"user"'):
                u = json.loads(line)
                out[u["user"]] = u
        return out

    def set_user(self, user: str, secret: str, permissions: dict[str, Any]) -> bool:
        """Add ``user`` or give it a new secret, rewrite the file and reload the server;
        False when no server could be reloaded."""
        users = self.users()
        users[user] = {"user": user, "password": _hash(secret.encode()),
                       "permissions": permissions}
        self.write(users)
        return self.reload()

    def write(self, users: dict[str, dict[str, Any]] | None = None) -> None:
        """Write the file (0600, atomically) with ``users`` (default: those in it) and the
        platform user; the platform's hash is kept while its password still matches."""
        users = dict(self.users() if users is None else users)
        old = users.get(self.platform_user, {}).get("password", "")
        if not (old and bcrypt.checkpw(self._platform_password, old.encode())):
            old = _hash(self._platform_password)
        users[self.platform_user] = {"user": self.platform_user, "password": old}
        lines = [json.dumps(users[self.platform_user])]
        lines += [json.dumps(u) for name, u in sorted(users.items())
                  if name != self.platform_user]
        text = _HEADER + "authorization {\n  users = [\n" + "".join(
            f"    {ln}\n" for ln in lines) + "  ]\n}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # an older tmp file may have had other bits
        tmp.replace(self.path)

    def reload(self) -> bool:
        """SIGHUP the server named by the pid file; False when there is none running (the
        server reads the file when it starts)."""
        if self.pid_file is None or not self.pid_file.exists():
            return False
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (ValueError, ProcessLookupError):
            return False
        return True


def _hash(secret: bytes) -> str:
    return bcrypt.hashpw(secret, bcrypt.gensalt(_ROUNDS)).decode()

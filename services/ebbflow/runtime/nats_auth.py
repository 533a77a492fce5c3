"""NATS users for `ebbflow up`'s own nats-server: one per service, each allowed to write only the state it owns.

Every process connects as its own user (`nats://<user>:<password>@host:port`,
passwords made fresh at each start, 32 random bytes). The server's
configuration denies each user the writes another service owns: a KV put or
delete is a publish to `$KV.<bucket>.<key>`, a stream message a publish to
its subject, and purging, deleting, updating or removing messages from a
stream are JetStream API requests, all denied to every user but the owners
below. So a compromised or buggy router cannot set desired replicas, nor
a collector rewrite the registry. Reads, subscriptions, the services'
own announcements and core subjects (telemetry, load, forecasts, wake-ups)
stay open to every service. `supervisor` is `ebbflow up` itself and the CLI
on this machine: it stops the fleet at a clean stop, so it may write anything.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from ebbflow.runtime import subjects

SUPERVISOR = "supervisor"
USERS = ("router", "collector", "forecaster", "scheduler", "actuator", SUPERVISOR)

OWNED_BUCKETS: dict[str, tuple[str, ...]] = {
    subjects.DESIRED_BUCKET: ("scheduler",),
    subjects.REPLICAS_BUCKET: ("actuator",),
    subjects.POLICIES_BUCKET: ("scheduler", "actuator"),  # the actuator imports the config file's policies at start
    subjects.MODELS_BUCKET: ("actuator",),
    subjects.CAPACITY_BUCKET: ("scheduler",),
    subjects.LEASES_BUCKET: ("scheduler",),
    subjects.TENANTS_BUCKET: ("scheduler",),
}
"""KV buckets and the services that may write them (the supervisor may write all)."""
OWNED_STREAMS: dict[str, tuple[str, str]] = {
    subjects.DECISIONS_STREAM: (subjects.DECISIONS, "scheduler"),
    subjects.LIFECYCLE_STREAM: (subjects.LIFECYCLE, "actuator"),
    subjects.HISTORY_FINE_STREAM: (subjects.HISTORY_FINE, "collector"),
    subjects.HISTORY_COARSE_STREAM: (subjects.HISTORY_COARSE, "collector"),
}
"""Streams: their subjects and the one service that writes them."""
_STREAM_CHANGES = ("DELETE", "PURGE", "UPDATE", "MSG.DELETE")


def denied(user: str) -> list[str]:
    """The subjects `user` may not publish to."""
    if user == SUPERVISOR:
        return []
    out = []
    for bucket, owners in OWNED_BUCKETS.items():
        if user not in owners:
            out += [f"$KV.{bucket}.>", *(f"$JS.API.STREAM.{change}.KV_{bucket}" for change in _STREAM_CHANGES)]
    for stream, (subject, owner) in OWNED_STREAMS.items():
        if user != owner:
            out += [f"{subject}.>", *(f"$JS.API.STREAM.{change}.{stream}" for change in _STREAM_CHANGES)]
    return out


@dataclass(frozen=True)
class NatsUsers:
    passwords: dict[str, str]

    @classmethod
    def generate(cls) -> NatsUsers:
        return cls({user: secrets.token_urlsafe(32) for user in USERS})

    def server_config(self) -> str:
        """The `authorization` block of nats-server's configuration (JSON is valid NATS configuration syntax)."""
        users = [
            {"user": user, "password": self.passwords[user], "permissions": {"publish": {"allow": [">"], "deny": denied(user)}, "subscribe": {"allow": [">"]}}}
            for user in USERS
        ]
        return "authorization " + json.dumps({"users": users}, indent=1) + "\n"

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> NatsUsers:
        """The users of the last run on this state directory (a process it left running keeps its password), else
        new ones; kept in a file only this user can read."""
        path = state_dir / USERS_FILE
        try:
            passwords = json.loads(path.read_text())
            if isinstance(passwords, dict) and set(passwords) == set(USERS) and all(isinstance(v, str) and v for v in passwords.values()):
                return cls(passwords)
        except (OSError, ValueError):
            pass
        users = cls.generate()
        write_private(path, json.dumps(users.passwords))
        return users

    def write_server_config(self, state_dir: Path) -> Path:
        path = state_dir / SERVER_CONFIG_FILE
        write_private(path, self.server_config())
        return path

    def url(self, user: str, url: str) -> str:
        """`url` (one server, or comma-separated cluster nodes) with `user`'s credentials in each."""
        return ",".join(with_credentials(part.strip(), user, self.passwords[user]) for part in url.split(",") if part.strip())


USERS_FILE = "nats-users.json"
SERVER_CONFIG_FILE = "nats-auth.conf"


def write_private(path: Path, text: str) -> None:
    """Write a file readable by this user only (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def same_servers(a: str, b: str) -> bool:
    """Whether two NATS URLs name the same servers, whoever they connect as."""
    def hosts(url: str) -> set[str]:
        return {urlsplit(part.strip()).netloc.rpartition("@")[2] for part in url.split(",") if part.strip()}

    return hosts(a) == hosts(b)


def redact(url: str) -> str:
    """A URL fit to show: any password replaced by `***` (every node of a cluster URL)."""
    shown = []
    for part in url.split(","):
        parts = urlsplit(part.strip())
        if parts.password is not None:
            user = parts.username or ""
            part = urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}"))
        shown.append(part.strip())
    return ",".join(shown)

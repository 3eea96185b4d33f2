"""The one place that matches Redis error strings, and that says which errors are transient."""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    MaxConnectionsError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)


def is_busygroup(exc: BaseException) -> bool:
    """XGROUP CREATE on a group that exists."""
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSYGROUP")


def is_nogroup(exc: BaseException) -> bool:
    """A group command on a stream or group that does not exist (e.g. after a FLUSHDB)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    ClusterDownError,  # "The cluster is down": a master failed, no replica promoted yet
    TryAgainError,  # a slot migrating or a multi-key step during resharding
    MasterDownError,  # a replica that lost its master
    ReadOnlyError,  # a demoted master still answering a stale connection
    SlotNotCoveredError,  # the client's topology is older than the failover
    BusyLoadingError,  # a restarted node loading its data
    MaxConnectionsError,  # a cluster node's pool full for a moment
    OSError,
)
"""Errors after which the same call succeeds later (a restart, a failover): retried, never
fatal to a service."""

STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
"""Whatever a call to the store can raise (the cluster client's own errors are no RedisError)."""

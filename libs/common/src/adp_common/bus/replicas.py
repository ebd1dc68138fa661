"""Replicas of the streams and buckets the bus creates (ADP_STREAM_REPLICAS): an error the servers give for a
count they cannot place becomes a start-up error that says what to change."""

from __future__ import annotations

import logging

from nats.js.errors import APIError

from adp_common.settings import ConfigError

log = logging.getLogger("adp.bus")

# JetStream API errors that mean the servers cannot hold that many replicas: 10074 "replicas > 1 not
# supported in non-clustered mode", 10005 "no suitable peers for placement", 10023 "insufficient resources".
REPLICAS_UNAVAILABLE_ERRORS = frozenset({10074, 10005, 10023})


class ReplicasUnavailable(ConfigError):
    """ADP_STREAM_REPLICAS asks for more replicas than the NATS servers can hold: the service stops at start."""


def raise_if_replicas_unavailable(err: APIError, what: str, replicas: int) -> None:
    """A replica count the NATS servers cannot place stops the service at start with a message that says so
    (ADP_STREAM_REPLICAS larger than the cluster), instead of a JetStream error code."""
    if err.err_code not in REPLICAS_UNAVAILABLE_ERRORS:
        return
    message = (
        f"ADP_STREAM_REPLICAS={replicas}: the NATS servers cannot keep {replicas} replicas of {what} "
        f"({err.description or err.err_code}). Set ADP_STREAM_REPLICAS to at most the number of JetStream "
        "servers in the cluster (1 for a single server)."
    )
    log.error(message)
    raise ReplicasUnavailable(message) from None

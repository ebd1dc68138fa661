"""Typed Python client for the AI Dialogue Platform's API (see the README's "Python client")."""

from adp_client.calls import ApiError
from adp_client.client import AsyncClient, Client
from adp_client.stream import Follow
from adp_common.schemas.events import ClientEvent

__all__ = ["ApiError", "AsyncClient", "Client", "ClientEvent", "Follow"]

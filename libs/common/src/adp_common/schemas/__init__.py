"""Every message the services exchange, as pydantic models (one module per owning domain).

Importing this package registers every durable event type in `adp_common.envelope.EVENT_TYPES`.
"""

from adp_common.schemas import alerts, common, cost, dialogue, events, llm, ops  # noqa: F401

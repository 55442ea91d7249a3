"""State store: ingestion records, quotas, stream reports, decisions, API keys."""

from simbdp.state.store import (
    MAX_REASON_CHARS,
    OUTCOMES,
    STATES,
    StateStore,
    short_reason,
    today,
)

__all__ = ["MAX_REASON_CHARS", "OUTCOMES", "STATES", "StateStore", "short_reason", "today"]

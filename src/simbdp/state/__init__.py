"""State store: ingestion records, quotas, stream reports, decisions, API keys."""

from simbdp.state.store import OUTCOMES, StateStore, today

__all__ = ["OUTCOMES", "StateStore", "today"]

"""simbdp: a multi-tenant big-data ingestion platform."""

__version__ = "0.1.0"

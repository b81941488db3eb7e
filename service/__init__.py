"""Heart-rate metrics service: durable multi-worker ingestion and per-minute queries."""

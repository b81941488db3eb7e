"""Access control: API keys (``keys``), the per-worker view of them (``ring``), what each
route needs (``rules``), the ASGI layer that enforces it (``layer``) and the start-up check
of the bind (``bind``). Nothing here imports Polars or FastAPI at module level: the gunicorn
master imports ``bind`` and ``keys``."""

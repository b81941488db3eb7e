"""The ceiling for ./ops/bench: a FastAPI app that reads each POST body and answers 202.

Run under the service's own gunicorn config, so the difference to the real routes is the
service's work (validation, WAL, fsync, buffer, metrics), not the HTTP stack:
``.venv/bin/gunicorn -c gunicorn.conf.py --bind 127.0.0.1:PORT ops.bench_noop:app``
(the positional app overrides the config's ``wsgi_app``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

_ACCEPTED = b'{"status":"accepted"}'

app = FastAPI(title="bench no-op")


@app.post("/metrics/{rest:path}", status_code=202)
async def accept(request: Request, rest: str) -> Response:
    await request.body()
    return Response(_ACCEPTED, status_code=202, media_type="application/json")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "healthy", "service": "bench-noop"}

"""The HTTP ingest: Cloudflare's purge API in front of zonepurge's queue (``zonepurge serve``).

A CMS plugin or SDK that purges at Cloudflare purges through zonepurge by changing its base URL
to ``http://HOST:PORT/client/v4`` and its token to an ingest token. Requests are validated and
enqueued by ``producer.Producer``, the same path as the CLI and the Python API; the answer is
Cloudflare's envelope with the receipt's id as ``result.id``.

- ``auth``: ingest tokens and what each may purge;
- ``envelope``: Cloudflare's response envelope and the ingest's error codes;
- ``bodies``: a Cloudflare purge body to a ``PurgeRequest``;
- ``app``: the FastAPI application (routes, limits, access log);
- ``server``: serving it with uvicorn.
"""

from ingest.app import create_app

__all__ = ["create_app"]

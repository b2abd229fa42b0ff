"""Workers: Celery on Redis, flushing lanes to Cloudflare. `celery -A worker worker` runs one."""

from worker.app import app
from worker import sweeper as _sweeper  # noqa: F401  (connects the sweep to worker start)

__all__ = ["app"]

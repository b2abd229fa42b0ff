"""zonepurge: a durable, rate-aware purge queue for Cloudflare zones and their environments."""

__version__ = "0.1.0"

"""Producers: validate purge requests and enqueue them for the workers."""

from producer.api import Producer, Receipt, UnavailableError, default_producer, enqueue
from producer.bulk import enqueue_file, enqueue_lines
from zonepurge.environments import UnknownEnvironmentError
from zonepurge.model import PurgeRequest, RequestError

__all__ = [
    "Producer",
    "PurgeRequest",
    "Receipt",
    "RequestError",
    "UnavailableError",
    "UnknownEnvironmentError",
    "default_producer",
    "enqueue",
    "enqueue_file",
    "enqueue_lines",
]

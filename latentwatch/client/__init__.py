"""The Python client: `LatentwatchClient`, numpy in, plain results out."""

from latentwatch.client.client import LatentwatchClient
from latentwatch.client.retry import RetryPolicy
from latentwatch.client.streaming import StreamPolicy

__all__ = ["LatentwatchClient", "RetryPolicy", "StreamPolicy"]

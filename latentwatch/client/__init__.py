"""The Python client: `LatentwatchClient` (numpy in, plain results out) and what it returns."""

from latentwatch.client.client import LatentwatchClient

__all__ = ["LatentwatchClient"]

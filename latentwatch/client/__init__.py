"""The Python client: `LatentwatchClient`, numpy in, plain results out."""

from latentwatch.client.client import LatentwatchClient

__all__ = ["LatentwatchClient"]

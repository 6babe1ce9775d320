"""Running a Ray dataset for latentwatch: the options it runs under, and the errors it raises.

A dataset runs under the DataContext it was made with (shared with the datasets it was made
from), not the current one, so `running` sets that context's options for the block and restores
them after: the caller's own datasets are left as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ray.data
from ray.exceptions import RayTaskError

from latentwatch.errors import LatentwatchError


@contextmanager
def running(ds: ray.data.Dataset, *, in_order: bool = False) -> Iterator[None]:
    """Runs `ds` in the block with a worker's LatentwatchError (bad rows, a refused version)
    raised as itself, and with `in_order` its blocks handed on in input order.

    Ray Data wraps an exception of a map in UserCodeException and drops the original unless
    `raise_original_map_exception`; with it the driver gets a RayTaskError whose `cause` is the
    worker's exception, raised here without Ray's traceback text.
    """
    context = ds.context
    options = context.execution_options
    before = (options.preserve_order, context.raise_original_map_exception)
    options.preserve_order = before[0] or in_order
    context.raise_original_map_exception = True
    try:
        yield
    except RayTaskError as err:
        if isinstance(err.cause, LatentwatchError):
            raise err.cause from None
        raise
    finally:
        options.preserve_order, context.raise_original_map_exception = before

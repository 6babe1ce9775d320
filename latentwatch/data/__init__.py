"""Data sources: whole datasets for training (`load_source`) and tables read in chunks for
scoring (`open_table`), with column names where the file has them. Torch-free."""

from latentwatch.data.columns import column_order
from latentwatch.data.sources import BUILTIN_SOURCES, Dataset, load_source, load_with_ids
from latentwatch.data.tables import Table, TableChunk, open_table

__all__ = [
    "BUILTIN_SOURCES",
    "Dataset",
    "Table",
    "TableChunk",
    "column_order",
    "load_source",
    "load_with_ids",
    "open_table",
]

"""Parquet (a row group at a time) and Arrow IPC files (a record batch at a time), via pyarrow.

Neither is memory-mapped: mapped pages count in the client's resident memory up to the file's
size, while plain reads keep it at one row group or record batch.

pyarrow is an optional dependency (`pip install 'latentwatch[tables]'`); it is imported only
when such a file is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentwatch.data.tables import PARQUET_SUFFIXES, Table, TableChunk, select
from latentwatch.errors import DataError

READ_BUFFER_BYTES = 1 << 20


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as err:
        raise DataError(
            "Parquet and Arrow files need pyarrow: pip install 'latentwatch[tables]'"
        ) from err
    return pyarrow


class ArrowTable(Table):
    def __init__(
        self, path: Path, columns: Sequence[str] | None, id_column: str | None
    ) -> None:
        pa = _pyarrow()
        self.source = str(path)
        self._path = path
        self._parquet = path.name.lower().endswith(PARQUET_SUFFIXES)
        try:
            if self._parquet:
                import pyarrow.parquet as pq

                # Buffered reads of each column chunk, not the whole row group at once.
                self._file = pq.ParquetFile(path, memory_map=False, buffer_size=READ_BUFFER_BYTES,
                                            pre_buffer=False)
                schema = self._file.schema_arrow
                self.n_rows = int(self._file.metadata.num_rows)
            else:
                self._file = _open_ipc(pa, path)
                schema = self._file.schema
                self.n_rows = None
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable {'Parquet' if self._parquet else 'Arrow'} "
                            f"file ({err})") from err
        all_names = [str(n) for n in schema.names]
        self._features, self._id = select(all_names, len(all_names), columns, id_column,
                                          self.source)
        for i in self._features:
            kind = schema.field(i).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_boolean(kind)):
                raise DataError(f"{path}: column {all_names[i]!r} is {kind}, not numeric")
        self.names = tuple(all_names[i] for i in self._features)
        self._all_names = all_names

    def _batches(self, rows: int) -> Iterator[Any]:
        wanted = [self._all_names[i] for i in self._features]
        if self._id is not None:
            wanted.append(self._all_names[self._id])
        if self._parquet:
            # Reads one row group at a time, only the wanted columns.
            yield from self._file.iter_batches(batch_size=rows, columns=wanted)
            return
        for index in range(self._file.num_record_batches):
            batch = self._file.get_batch(index).select(wanted)
            for start in range(0, batch.num_rows, rows):
                yield batch.slice(start, rows)

    def chunks(self, rows: int) -> Iterator[TableChunk]:
        n_features = len(self._features)
        for batch in self._batches(rows):
            X = np.empty((batch.num_rows, n_features), dtype=np.float32)
            for j in range(n_features):
                column = batch.column(j)
                if column.null_count:
                    name = self._all_names[self._features[j]]
                    raise DataError(f"{self._path}: column {name!r} has {column.null_count} "
                                    "missing values")
                X[:, j] = column.to_numpy(zero_copy_only=False)
            ids = None
            if self._id is not None:
                ids = [str(v) for v in batch.column(n_features).to_pylist()]
            yield TableChunk(X, ids)


def _open_ipc(pa: Any, path: Path) -> Any:
    import pyarrow.ipc

    try:
        return pyarrow.ipc.open_file(pa.OSFile(str(path), "r"))
    except pa.ArrowInvalid:
        # The stream format (no footer, no random access to batches): read whole.
        return _StreamFile(pyarrow.ipc.open_stream(pa.OSFile(str(path), "r")).read_all())


class _StreamFile:
    def __init__(self, table: Any) -> None:
        self.schema = table.schema
        self._batches = table.to_batches()
        self.num_record_batches = len(self._batches)

    def get_batch(self, index: int) -> Any:
        return self._batches[index]


def arrow_table(path: Path, columns: Sequence[str] | None, id_column: str | None) -> Table:
    return ArrowTable(path, columns, id_column)

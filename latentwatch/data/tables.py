"""Tables read in chunks, so that scoring a file needs memory independent of its size.

CSV and TSV are read a block of lines at a time, Parquet a row group at a time (pyarrow), Arrow
IPC files by memory map, 2-D .npy files by memory map; other sources (digits, .npz, IDX images)
are small and loaded whole. Files with a header or a schema carry their column names; `columns`
selects features by name or index, `id_column` names a column passed through as row ids.
"""

from __future__ import annotations

import csv
import io
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.data.columns import shown
from latentwatch.errors import DataError

CSV_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
MAX_CELL_SHOWN = 40


@dataclass(frozen=True, eq=False)
class TableChunk:
    X: NDArray[np.float32]  # (n, F) the selected feature columns
    ids: list[str] | None  # (n,) the id column's cells, when one was named


class Table(ABC):
    source: str
    names: tuple[str, ...] | None  # feature column names, after selection; None when unnamed
    n_rows: int | None  # when known without reading the file (Parquet, Arrow, arrays)

    @abstractmethod
    def chunks(self, rows: int) -> Iterator[TableChunk]:
        """Consecutive chunks of at most `rows` rows, in file order."""


def open_table(
    source: str,
    *,
    delimiter: str | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Table:
    path = Path(source)
    name = path.name.lower()
    if source.strip().lower() != "digits" and not path.is_file():
        raise DataError(f"{source}: no such file")
    if delimiter is not None and not name.endswith(CSV_SUFFIXES):
        raise DataError(f"{source}: --delimiter applies to CSV/TSV files only")
    if name.endswith(CSV_SUFFIXES):
        return CsvTable(path, delimiter, columns, id_column)
    if name.endswith(PARQUET_SUFFIXES + ARROW_SUFFIXES):
        from latentwatch.data.arrow import arrow_table

        return arrow_table(path, columns, id_column)
    if name.endswith(".npy"):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.ndim == 2:
            return ArrayTable(array, str(path), columns, id_column)
    from latentwatch.data.sources import load_source

    return ArrayTable(load_source(source).X, source, columns, id_column)


def select(
    all_names: Sequence[str] | None,
    width: int,
    columns: Sequence[str] | None,
    id_column: str | None,
    source: str,
) -> tuple[list[int], int | None]:
    """Feature column indices and the id column's index, from names or 0-based indices."""

    def index_of(key: str) -> int:
        if all_names is not None and key in all_names:
            return list(all_names).index(key)
        if key.strip().isdigit():
            index = int(key)
            if index < width:
                return index
            raise DataError(f"{source}: column index {index} is out of range ({width} columns)")
        known = f"; columns are {shown(list(all_names))}" if all_names else " (it has no header)"
        raise DataError(f"{source}: no column {key!r}{known}")

    id_index = index_of(id_column) if id_column is not None else None
    if columns:
        features = [index_of(c) for c in columns]
    else:
        features = [i for i in range(width) if i != id_index]
    if id_index is not None and id_index in features:
        raise DataError(f"{source}: the id column {id_column!r} cannot also be a feature")
    if not features:
        raise DataError(f"{source}: no feature columns left")
    return features, id_index


class ArrayTable(Table):
    """A 2-D array (a memory-mapped .npy or a loaded dataset), sliced into chunks."""

    def __init__(
        self, array: NDArray, source: str, columns: Sequence[str] | None, id_column: str | None
    ) -> None:
        if id_column is not None:
            raise DataError(f"{source}: --id-column needs a CSV, TSV, Parquet or Arrow file")
        if array.ndim != 2 or array.dtype.kind not in "biuf":
            raise DataError(f"{source}: expected numeric rows (N, F), got {array.dtype} "
                            f"{tuple(array.shape)}")
        self._array = array
        self._features, _ = select(None, array.shape[1], columns, None, source)
        self.source, self.names, self.n_rows = source, None, int(array.shape[0])

    def chunks(self, rows: int) -> Iterator[TableChunk]:
        for start in range(0, self._array.shape[0], rows):
            block = np.asarray(self._array[start : start + rows])[:, self._features]
            yield TableChunk(block.astype(np.float32), None)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _sniffed(line: str, delimiter: str) -> str | None:
    """The delimiter a one-column line probably uses, for the error's hint."""
    counts = {d: line.count(d) for d in CANDIDATE_DELIMITERS if d != delimiter}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else None


class CsvTable(Table):
    """CSV/TSV with an optional header line (a first line with no number in it)."""

    def __init__(
        self,
        path: Path,
        delimiter: str | None,
        columns: Sequence[str] | None,
        id_column: str | None,
    ) -> None:
        self.source = str(path)
        self._path = path
        tsv = path.name.lower().endswith((".tsv", ".tab"))
        self._delimiter = delimiter if delimiter is not None else ("\t" if tsv else ",")
        if len(self._delimiter) != 1:
            raise DataError(f"{path}: the delimiter must be one character, got "
                            f"{self._delimiter!r}")
        self._skip_lines = 0
        all_names: list[str] | None = None
        width = 0
        with self._open() as f:
            for line in f:
                self._skip_lines += 1
                if line.strip():
                    cells = next(csv.reader([line], delimiter=self._delimiter))
                    width = len(cells)
                    if not any(_is_number(c) for c in cells):
                        all_names = [c.strip() for c in cells]
                    else:
                        self._skip_lines -= 1  # a data line: read it again with the rest
                    break
        if width == 0:
            raise DataError(f"{path}: no data rows")
        guess = _sniffed(line, self._delimiter)
        if width == 1 and guess is not None:
            raise DataError(
                f"{path}: line {self._skip_lines or 1} parses to one column with delimiter "
                f"{self._delimiter!r}, but it holds {guess!r}; pass --delimiter {guess!r}"
            )
        self._width = width
        self._features, self._id = select(all_names, width, columns, id_column, self.source)
        self.names = None if all_names is None else tuple(all_names[i] for i in self._features)
        self._all_names = all_names
        self.n_rows = None

    def _open(self) -> io.TextIOWrapper:
        return self._path.open(newline="", encoding="utf-8", errors="replace")

    def chunks(self, rows: int) -> Iterator[TableChunk]:
        n_data = 0
        with self._open() as f:
            line_no = self._skip_lines
            for _ in range(self._skip_lines):
                next(f)
            while lines := list(islice(f, rows)):
                chunk = self._parse(lines, line_no + 1)
                line_no += len(lines)
                if len(chunk.X):
                    n_data += len(chunk.X)
                    yield chunk
        if n_data == 0:
            raise DataError(f"{self._path}: no data rows")

    def _parse(self, lines: list[str], first_line: int) -> TableChunk:
        if self._id is None:
            try:
                # numpy's C parser; refuses ragged rows and non-numbers, skips blank lines.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "input contained no data": blank lines
                    X = np.loadtxt(lines, delimiter=self._delimiter, dtype=np.float32, ndmin=2,
                                   comments=None, quotechar='"')
                if X.shape[1] == self._width or X.shape[0] == 0:
                    X = X.reshape(-1, self._width)
                    return TableChunk(np.ascontiguousarray(X[:, self._features]), None)
            except ValueError:
                pass
        return self._parse_slowly(lines, first_line)

    def _parse_slowly(self, lines: list[str], first_line: int) -> TableChunk:
        """Row by row: ids, and the exact line and column of the first bad cell."""
        values: list[list[float]] = []
        ids: list[str] = []
        for offset, cells in enumerate(csv.reader(lines, delimiter=self._delimiter)):
            if not cells or all(not c.strip() for c in cells):
                continue
            line = first_line + offset
            if len(cells) != self._width:
                raise DataError(
                    f"{self._path}: line {line} has {len(cells)} columns, expected {self._width}"
                )
            row = []
            for column in self._features:
                cell = cells[column]
                try:
                    row.append(float(cell))
                except ValueError:
                    name = f" ({self._all_names[column]!r})" if self._all_names else ""
                    text = cell if len(cell) <= MAX_CELL_SHOWN else cell[:MAX_CELL_SHOWN] + "…"
                    what = repr(text) if cell.strip() else "empty"
                    raise DataError(
                        f"{self._path}: line {line}, column {column + 1}{name}: {what} is not "
                        "a number"
                    ) from None
            values.append(row)
            if self._id is not None:
                ids.append(cells[self._id].strip())
        X = np.array(values, dtype=np.float32).reshape(-1, len(self._features))
        return TableChunk(X, ids if self._id is not None else None)

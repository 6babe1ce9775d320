"""Whole datasets for training: digits, .npy, .npz, CSV/TSV, Parquet, Arrow and MNIST IDX files.

Torch-free (the `score` CLI uses it). Every problem raises `DataError` naming the file and the
problem; nothing pickled is ever loaded.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from latentwatch.data.tables import (
    ARROW_SUFFIXES,
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    open_table,
)
from latentwatch.errors import DataError

logger = logging.getLogger(__name__)

BUILTIN_SOURCES = ("digits",)
IDX_IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension (N,)
TABLE_CHUNK_ROWS = 65536


@dataclass(frozen=True, eq=False)
class Dataset:
    X: NDArray[np.float32]  # (N, F) raw values, images flattened row-major
    y: NDArray[np.int64] | None  # (N,) labels when the source has them
    image_shape: tuple[int, int, int] | None  # (1, H, W) for image sources, else None
    max_value: float | None  # images: pixel scale max (16 for digits, 255 for uint8 data)
    source: str  # what was loaded, for provenance and messages
    # Column names from a CSV header or a Parquet/Arrow schema; None for unnamed sources.
    feature_names: tuple[str, ...] | None = None

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def load_source(source: str, *, max_rows: int | None = None) -> Dataset:
    """Load `digits` or a file; keep the first `max_rows` rows when given."""
    if max_rows is not None and max_rows < 1:
        raise DataError(f"{source}: max_rows must be a positive integer, got {max_rows}")
    if source.strip().lower() == "digits":
        return _finish(_load_digits(), max_rows)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"{source}: no such file (expected 'digits' or a .npy/.npz/.csv/.tsv/.parquet/"
            ".arrow/IDX file)"
        )
    if not path.is_file():
        raise DataError(f"{source}: not a regular file")
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            dataset = _load_npy(path, max_rows)
        elif name.endswith(".npz"):
            dataset = _load_npz(path, max_rows)
        elif name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES):
            dataset = _load_table(source, max_rows)
        elif name.endswith(".gz") or "ubyte" in name or name.endswith(".idx"):
            dataset = _load_idx_images(path, max_rows)
        else:
            raise DataError(
                f"{path}: unknown format {path.suffix or '(no extension)'!r}; expected .npy, "
                ".npz, .csv, .tsv, .parquet, .arrow or an MNIST-format IDX file (…-idx3-ubyte, "
                "optionally .gz)"
            )
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from err
    return _finish(dataset, max_rows)


def _finish(dataset: Dataset, max_rows: int | None) -> Dataset:
    """Cut to max_rows, then check what every source must satisfy."""
    X, y = dataset.X, dataset.y
    if max_rows is not None and X.shape[0] > max_rows:
        X = X[:max_rows]
        y = None if y is None else y[:max_rows]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{dataset.source}: no data (shape {tuple(X.shape)})")
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"{dataset.source}: {int((~finite).sum())} NaN/Inf values; first in row "
            f"{int(bad_rows[0])}"
        )
    if y is not None and y.shape[0] != X.shape[0]:
        raise DataError(f"{dataset.source}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    return Dataset(
        X, y, dataset.image_shape, dataset.max_value, dataset.source, dataset.feature_names
    )


def _load_digits() -> Dataset:
    # Read scikit-learn's bundled file directly when it is where sklearn keeps it: importing
    # sklearn.datasets pulls in scipy and costs seconds in every fresh CLI process.
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise DataError(
            "digits: needs scikit-learn; install the training extras: "
            "pip install 'latentwatch[train]'"
        )
    bundled = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if bundled.is_file():
        table = np.loadtxt(bundled, delimiter=",", dtype=np.float64)  # (1797, 65): pixels, digit
        X, y = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        X, y = bunch.data, bunch.target
    return Dataset(
        X=X.astype(np.float32),  # (1797, 64), values 0..16
        y=y.astype(np.int64),
        image_shape=(1, 8, 8),
        max_value=16.0,
        source="digits",
    )


# --- NumPy files -------------------------------------------------------------------------------


def _load_npy(path: Path, max_rows: int | None) -> Dataset:
    try:
        # Memory-mapped so that max_rows reads only what it keeps.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as err:
        raise DataError(f"{path}: {_numpy_problem(err)}") from err
    if max_rows is not None:
        array = array[:max_rows]
    return _from_array(np.asarray(array), None, str(path))


def _load_npz(path: Path, max_rows: int | None) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise DataError(f"{path}: no array named 'X' (found {sorted(archive.files)})")
            X = archive["X"]
            y = archive["y"] if "y" in archive.files else None
    except (ValueError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: {_numpy_problem(err)}") from err
    if max_rows is not None:
        X = X[:max_rows]
        y = None if y is None else y[:max_rows]
    return _from_array(X, None if y is None else _labels(y, path), str(path))


def _numpy_problem(err: Exception) -> str:
    text = str(err)
    if "Object arrays" in text or "Python objects" in text:
        return "holds object (pickled) arrays, which are never loaded; save numeric arrays"
    if "pickled data" in text:
        return "not a NumPy file (pickled files are never loaded)"
    return f"not a readable NumPy file ({text or type(err).__name__})"


def _labels(y: NDArray, path: Path) -> NDArray[np.int64]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{path}: y must be 1-D, got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{path}: y must be numeric labels, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise DataError(f"{path}: y must hold integer labels")
    return y.astype(np.int64)


def _from_array(array: NDArray, y: NDArray[np.int64] | None, source: str) -> Dataset:
    """Rows from a 2-D array, images from (N, H, W) or (N, 1, H, W)."""
    if array.dtype.kind not in "biuf":
        raise DataError(f"{source}: expected numeric data, got dtype {array.dtype}")
    if array.ndim == 2:
        return Dataset(array.astype(np.float32), y, None, None, source)
    if array.ndim == 4:
        if array.shape[1] != 1:
            raise DataError(
                f"{source}: only single-channel images are supported, got shape {array.shape}"
            )
        array = array[:, 0]
    if array.ndim != 3:
        raise DataError(
            f"{source}: expected 2-D rows (N, F) or images (N, H, W) / (N, 1, H, W), "
            f"got shape {array.shape}"
        )
    n, height, width = array.shape
    return Dataset(
        X=array.reshape(n, height * width).astype(np.float32),
        y=y,
        image_shape=(1, height, width),
        max_value=_pixel_max(array, source),
        source=source,
    )


def _pixel_max(images: NDArray, source: str) -> float:
    """The value that maps to 1.0 when images are scaled to [0, 1]."""
    if images.dtype == np.uint8 or images.size == 0:
        return 255.0
    if images.dtype == np.bool_:
        return 1.0
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
        return 1.0  # the NaN/Inf check reports it with row numbers
    if low < 0:
        raise DataError(
            f"{source}: image values go below 0 (min {low:g}); images must be non-negative "
            "(uint8, or floats in [0, 1]); pass already-standardised data as 2-D rows"
        )
    if images.dtype.kind == "f" and high <= 1.0:
        return 1.0
    if images.dtype.kind in "biu" and high <= 255:
        return 255.0
    logger.warning("%s: image values reach %g; scaling by that maximum", source, high)
    return high


# --- CSV -----------------------------------------------------------------------------------------


def _load_table(source: str, max_rows: int | None) -> Dataset:
    return load_with_ids(source, None, max_rows=max_rows)[0]


def load_with_ids(
    source: str, id_column: str | None, *, max_rows: int | None = None
) -> tuple[Dataset, list[str] | None]:
    """A CSV/TSV/Parquet/Arrow file whole, without its id column, and the ids it holds."""
    table = open_table(source, id_column=id_column)
    parts: list[NDArray[np.float32]] = []
    ids: list[str] = []
    n_rows = 0
    for chunk in table.chunks(TABLE_CHUNK_ROWS):
        parts.append(chunk.X)
        ids.extend(chunk.ids or [])
        n_rows += len(chunk.X)
        if max_rows is not None and n_rows >= max_rows:
            break
    dataset = _finish(Dataset(np.concatenate(parts), None, None, None, source, table.names),
                      max_rows)
    return dataset, (ids[: dataset.n_rows] if id_column is not None else None)


# --- IDX (MNIST format) ------------------------------------------------------------------------


@contextmanager
def _open_maybe_gzip(path: Path) -> Iterator[BinaryIO]:
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    stream: BinaryIO = gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[assignment]
    try:
        yield stream
    finally:
        stream.close()


def _read_exact(stream: BinaryIO, n_bytes: int, path: Path, what: str) -> bytes:
    try:
        data = stream.read(n_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: corrupt or truncated gzip data ({err})") from err
    if len(data) != n_bytes:
        raise DataError(f"{path}: truncated: expected {n_bytes} bytes of {what}, found {len(data)}")
    return data


def _read_idx(
    path: Path, magic_expected: int, n_dims: int, max_rows: int | None
) -> NDArray[np.uint8]:
    with _open_maybe_gzip(path) as stream:
        magic = int.from_bytes(_read_exact(stream, 4, path, "IDX magic number"), "big")
        if magic != magic_expected:
            hint = ""
            if magic == IDX_LABELS_MAGIC:
                hint = " (an IDX labels file; pass the images file)"
            raise DataError(
                f"{path}: bad IDX magic number {magic}{hint}, expected {magic_expected}"
            )
        header = _read_exact(stream, 4 * n_dims, path, "IDX header")
        dims = [int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(n_dims)]
        n_keep = dims[0] if max_rows is None else min(dims[0], max_rows)
        per_row = int(np.prod(dims[1:], dtype=np.int64))
        data = _read_exact(stream, n_keep * per_row, path, "data")
        if n_keep == dims[0] and _read_trailing(stream, path):
            raise DataError(f"{path}: has bytes past the {dims[0]} items its header declares")
    return np.frombuffer(data, dtype=np.uint8).reshape([n_keep, *dims[1:]])


def _read_trailing(stream: BinaryIO, path: Path) -> bool:
    try:
        return bool(stream.read(1))
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: corrupt or truncated gzip data ({err})") from err


def _labels_sibling(images_path: Path) -> Path | None:
    name, n = re.subn(r"images([.-])idx3", r"labels\1idx1", images_path.name)
    if n == 0:
        return None
    candidate = images_path.with_name(name)
    return candidate if candidate.is_file() else None


def _load_idx_images(path: Path, max_rows: int | None) -> Dataset:
    images = _read_idx(path, IDX_IMAGES_MAGIC, 3, max_rows)  # (N, H, W) uint8
    n, height, width = images.shape
    y = None
    labels_path = _labels_sibling(path)
    if labels_path is not None:
        labels = _read_idx(labels_path, IDX_LABELS_MAGIC, 1, max_rows)
        if labels.shape[0] != n:
            raise DataError(
                f"{labels_path}: has {labels.shape[0]} labels for {n} images in {path.name}"
            )
        y = labels.astype(np.int64)
    return Dataset(
        X=images.reshape(n, height * width).astype(np.float32),
        y=y,
        image_shape=(1, height, width),
        max_value=255.0,
        source=str(path),
    )

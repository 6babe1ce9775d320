"""latentwatch.data: every source kind, and a DataError naming file and problem for each fault."""

from __future__ import annotations

import gzip
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from latentwatch.data import load_source
from latentwatch.errors import DataError


def _idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", magic, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _images(n: int = 5, h: int = 6, w: int = 4) -> np.ndarray:
    return np.arange(n * h * w, dtype=np.uint8).reshape(n, h, w)


# --- built-in digits --------------------------------------------------------------------------


def test_digits_are_8x8_images_scaled_to_16() -> None:
    data = load_source("digits")
    assert data.X.shape == (1797, 64) and data.X.dtype == np.float32
    assert data.y is not None and data.y.shape == (1797,) and set(data.y.tolist()) == set(range(10))
    assert data.image_shape == (1, 8, 8) and data.is_image
    assert data.max_value == 16.0 and data.X.max() == 16.0 and data.X.min() == 0.0
    assert data.source == "digits"


def test_digits_max_rows_keeps_first_rows() -> None:
    full, cut = load_source("digits"), load_source("digits", max_rows=10)
    assert cut.X.shape == (10, 64)
    np.testing.assert_array_equal(cut.X, full.X[:10])
    np.testing.assert_array_equal(cut.y, full.y[:10])


def test_digits_match_scikit_learn_load_digits() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load_source("digits")
    np.testing.assert_array_equal(data.X, bunch.data.astype(np.float32))
    np.testing.assert_array_equal(data.y, bunch.target)


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if it were not installed
    with pytest.raises(DataError, match=r"latentwatch\[train\]"):
        load_source("digits")


@pytest.mark.parametrize("max_rows", [0, -3])
def test_max_rows_must_be_positive(max_rows: int) -> None:
    with pytest.raises(DataError, match="max_rows"):
        load_source("digits", max_rows=max_rows)


# --- .npy / .npz ------------------------------------------------------------------------------


def test_npy_2d_is_tabular(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(7, 3))
    np.save(tmp_path / "rows.npy", rows)
    data = load_source(str(tmp_path / "rows.npy"), max_rows=4)
    assert data.X.shape == (4, 3) and data.X.dtype == np.float32 and not data.is_image
    assert data.image_shape is None and data.max_value is None and data.y is None
    np.testing.assert_allclose(data.X, rows[:4].astype(np.float32))


def test_npy_3d_uint8_is_images_max_255(tmp_path: Path) -> None:
    images = _images()
    np.save(tmp_path / "img.npy", images)
    data = load_source(str(tmp_path / "img.npy"))
    assert data.image_shape == (1, 6, 4) and data.max_value == 255.0
    np.testing.assert_array_equal(data.X, images.reshape(5, 24).astype(np.float32))


def test_npy_4d_float_unit_range_is_images_max_1(tmp_path: Path) -> None:
    images = np.random.default_rng(0).uniform(size=(3, 1, 5, 5)).astype(np.float32)
    np.save(tmp_path / "img.npy", images)
    data = load_source(str(tmp_path / "img.npy"))
    assert data.image_shape == (1, 5, 5) and data.max_value == 1.0
    np.testing.assert_array_equal(data.X, images.reshape(3, 25))


def test_npy_bool_images_have_max_1(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.eye(4, dtype=bool)[None].repeat(2, axis=0))
    data = load_source(str(tmp_path / "img.npy"))
    assert data.image_shape == (1, 4, 4) and data.max_value == 1.0 and data.X.max() == 1.0


def test_npz_with_labels(tmp_path: Path) -> None:
    X = np.random.default_rng(1).normal(size=(6, 4))
    y = np.array([0, 1, 0, 0, 1, 0], dtype=np.float64)  # ADBench stores labels as floats
    np.savez(tmp_path / "set.npz", X=X, y=y)
    data = load_source(str(tmp_path / "set.npz"))
    assert data.X.shape == (6, 4) and data.y is not None and data.y.dtype == np.int64
    np.testing.assert_array_equal(data.y, y.astype(np.int64))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"Y": np.zeros((3, 2))}, "no array named 'X'"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(4)}, "X has 3 rows but y has 4"),
        ({"X": np.zeros((3, 2)), "y": np.array([0.5, 1, 0])}, "integer labels"),
        ({"X": np.array([[1, None]], dtype=object)}, "object"),
        ({"X": np.zeros((0, 3))}, "no data"),
        ({"X": np.zeros((3, 2, 2, 2))}, "single-channel"),
    ],
)
def test_npz_problems(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as info:
        load_source(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[1, "a"]], dtype=object), "object"),
        (np.zeros(5), "got shape"),
        (np.array([["a", "b"]]), "numeric"),
        (-np.ones((2, 3, 3), dtype=np.float32), "below 0"),
    ],
)
def test_npy_problems(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)  # the loader must still refuse object arrays
    with pytest.raises(DataError, match=message) as info:
        load_source(str(path))
    assert str(path) in str(info.value)


def test_npy_nan_and_inf_are_counted_with_first_row(tmp_path: Path) -> None:
    rows = np.zeros((6, 3))
    rows[2, 1] = np.nan
    rows[4, 0] = np.inf
    rows[4, 2] = -np.inf
    np.save(tmp_path / "nan.npy", rows)
    with pytest.raises(DataError, match=r"3 NaN/Inf values; first in row 2"):
        load_source(str(tmp_path / "nan.npy"))


def test_garbage_files_are_refused(tmp_path: Path) -> None:
    for name in ("junk.npy", "junk.npz"):
        (tmp_path / name).write_bytes(b"\x80\x04 definitely not numpy")
        with pytest.raises(DataError, match=name):
            load_source(str(tmp_path / name))


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_with_header(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n4.5, -6e-1 ,7\n\n8,9,10\n")
    data = load_source(str(tmp_path / "t.csv"))
    np.testing.assert_allclose(data.X, [[1, 2, 3], [4.5, -0.6, 7], [8, 9, 10]])
    assert data.y is None and not data.is_image


def test_csv_without_header_and_max_rows(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("1,2\n3,4\n5,6\n")
    data = load_source(str(tmp_path / "t.csv"), max_rows=2)
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3\n", "line 3 has 1 columns, expected 2"),
        ("a,b\n1,2\n3,x\n", r"line 3, column 2 \('b'\): 'x' is not a number"),
        ("1,2\n3,\n", "line 2, column 2: empty is not a number"),
        ("1,2\nnan,4\n", "1 NaN/Inf values; first in row 1"),
        ("1,2\n3,inf\n5,-inf\n", "2 NaN/Inf values; first in row 1"),
        ("a,b\n", "no data rows"),
        ("", "no data rows"),
    ],
)
def test_csv_problems(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_source(str(path))
    assert str(path) in str(info.value)


# --- IDX (MNIST format) -----------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_images_with_sibling_labels(tmp_path: Path, gzipped: bool) -> None:
    images, labels = _images(), np.array([3, 1, 4, 1, 5])
    suffix, write = (".gz", gzip.compress) if gzipped else ("", bytes)
    images_path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    images_path.write_bytes(write(_idx_images(images)))
    (tmp_path / f"train-labels-idx1-ubyte{suffix}").write_bytes(write(_idx_labels(labels)))
    data = load_source(str(images_path))
    assert data.image_shape == (1, 6, 4) and data.max_value == 255.0
    np.testing.assert_array_equal(data.X, images.reshape(5, 24))
    np.testing.assert_array_equal(data.y, labels)
    cut = load_source(str(images_path), max_rows=2)
    assert cut.X.shape == (2, 24) and cut.y is not None and cut.y.tolist() == [3, 1]


def test_idx_without_labels_has_no_y(tmp_path: Path) -> None:
    path = tmp_path / "custom-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_images(_images())))
    assert load_source(str(path)).y is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_idx_images(_images(), magic=2052), "bad IDX magic number 2052"),
        (_idx_labels(np.arange(4)), "labels file"),
        (_idx_images(_images())[:-7], "truncated"),
        (_idx_images(_images())[:10], "truncated"),
        (_idx_images(_images()) + b"\x00", "past the 5 items"),
    ],
    ids=["bad-magic", "labels-as-images", "truncated-data", "truncated-header", "trailing"],
)
def test_idx_problems(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match=message) as info:
        load_source(str(path))
    assert str(path) in str(info.value)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_images(_images()))[:-12])  # cut inside the stream
    with pytest.raises(DataError, match="gzip|truncated"):
        load_source(str(path))


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    (tmp_path / "t-images-idx3-ubyte").write_bytes(_idx_images(_images()))
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(_idx_labels(np.arange(4)))
    with pytest.raises(DataError, match="4 labels for 5 images"):
        load_source(str(tmp_path / "t-images-idx3-ubyte"))


def test_real_mnist_first_rows(shared_data: Callable[..., Path]) -> None:
    path = shared_data("mnist", "t10k-images-idx3-ubyte.gz")
    data = load_source(str(path), max_rows=20)
    assert data.X.shape == (20, 784) and data.image_shape == (1, 28, 28)
    assert data.y is not None and data.y[:3].tolist() == [7, 2, 1]  # the well-known first digits
    assert 0 <= data.X.min() and data.X.max() <= 255


# --- files that are not there or not data ------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_source(str(tmp_path / "nope.npy"))


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a regular file"):
        load_source(str(tmp_path))


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "rows.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unknown format '.xlsx'"):
        load_source(str(tmp_path / "rows.xlsx"))


def test_a_broken_parquet_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_source(str(tmp_path / "rows.parquet"))


def test_loading_data_never_imports_torch_or_onnx() -> None:
    """The `score` CLI loads data on the serving side, which must stay torch-free."""
    import subprocess

    code = (
        "import sys; from latentwatch.data import load_source; load_source('digits'); "
        "heavy = [m for m in ('torch', 'onnx') if m in sys.modules]; "
        "sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


# --- Tables read in chunks ---------------------------------------------------------------------


def test_csv_tables_read_in_chunks_match_the_whole_file(tmp_path: Path) -> None:
    from latentwatch.data import open_table

    X = np.arange(70, dtype=np.float32).reshape(35, 2)
    lines = ["a,b"] + [f"{r[0]!r},{r[1]!r}" for r in X.tolist()]
    lines.insert(10, "")  # a blank line inside a chunk
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    table = open_table(str(tmp_path / "t.csv"))
    chunks = [c.X for c in table.chunks(8)]
    assert table.names == ("a", "b") and max(len(c) for c in chunks) <= 8
    np.testing.assert_array_equal(np.concatenate(chunks), X)
    assert load_source(str(tmp_path / "t.csv")).feature_names == ("a", "b")


def test_csv_errors_name_the_line_across_chunks_and_stay_short(tmp_path: Path) -> None:
    from latentwatch.data import open_table

    (tmp_path / "t.csv").write_text("a,b\n" + "1,2\n" * 20 + f"3,{'x' * 700}\n")
    with pytest.raises(DataError, match=r"line 22, column 2 \('b'\)") as info:
        list(open_table(str(tmp_path / "t.csv")).chunks(8))
    assert len(str(info.value)) < 200


def test_a_semicolon_csv_gets_a_delimiter_hint(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a;b;c\n1;2;3\n")
    with pytest.raises(DataError, match="pass --delimiter ';'"):
        load_source(str(tmp_path / "t.csv"))
    from latentwatch.data import open_table

    table = open_table(str(tmp_path / "t.csv"), delimiter=";", columns=["c", "0"])
    assert table.names == ("c", "a")
    np.testing.assert_array_equal(next(table.chunks(10)).X, [[3, 1]])


def test_tsv_ids_and_parquet_row_groups(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latentwatch.data import open_table

    (tmp_path / "t.tsv").write_text("id\tx\ty\nr1\t1\t2\nr2\t3\t4\n")
    chunk = next(open_table(str(tmp_path / "t.tsv"), id_column="id").chunks(10))
    assert chunk.ids == ["r1", "r2"]
    np.testing.assert_array_equal(chunk.X, [[1, 2], [3, 4]])

    names = [str(i) for i in range(10)]
    table = pa.table({"x": np.arange(10.0), "y": np.arange(10), "name": names})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=4)
    parquet = open_table(str(tmp_path / "t.parquet"), id_column="name")
    assert parquet.names == ("x", "y") and parquet.n_rows == 10
    chunks = list(parquet.chunks(3))
    assert [len(c.X) for c in chunks] == [3, 3, 3, 1]
    assert chunks[3].ids == ["9"]
    np.testing.assert_array_equal(np.concatenate([c.X for c in chunks])[:, 1], np.arange(10))
    with pytest.raises(DataError, match="column 'name' is string, not numeric"):
        open_table(str(tmp_path / "t.parquet"))


# --- sketch -> image pairs (latentwatch.data.pairs) ---------------------------------------------


def test_edge_maps_mark_the_outline_of_a_square_in_the_images_units() -> None:
    from latentwatch.data.pairs import EdgeRecipe, edge_maps

    square = np.zeros((1, 8, 8), dtype=np.float32)
    square[0, 2:6, 2:6] = 255.0
    sketch = edge_maps(square.reshape(1, 64), (1, 8, 8), 255.0, EdgeRecipe(threshold=0.5))
    edges = sketch.reshape(8, 8) > 0
    assert set(np.unique(sketch)) == {0.0, 255.0}
    # The boundary of the square and the ring around it are edges; its flat centre and the far
    # background are not.
    assert edges[2, 3] and edges[1, 3] and edges[5, 4]
    assert not edges[3:5, 3:5].any() and not edges[0, 0] and not edges[7, 7]
    blank = edge_maps(np.zeros((2, 64)), (1, 8, 8), 16.0)
    assert not blank.any()
    with pytest.raises(DataError, match=r"edge maps take \(N, 64\)"):
        edge_maps(np.zeros((2, 60)), (1, 8, 8), 16.0)


def test_pairs_are_deterministic_and_held_out_rows_are_disjoint() -> None:
    from latentwatch.data.pairs import EdgeRecipe, make_pairs

    digits = load_source("digits")
    first, again = make_pairs(digits, seed=3), make_pairs(digits, seed=3)
    assert np.array_equal(first.sketch, again.sketch)
    assert np.array_equal(first.held_out, again.held_out)
    assert np.intersect1d(first.train, first.held_out).size == 0
    assert np.union1d(first.train, first.held_out).size == digits.n_rows
    assert first.held_out.size == round(0.1 * digits.n_rows)
    assert not np.array_equal(first.held_out, make_pairs(digits, seed=4).held_out)
    # The sketch is not the image: edges mark where intensity changes, not where ink is.
    share_edges = float((first.sketch > 0).mean())
    assert 0.2 < share_edges < 0.8 and not np.array_equal(first.sketch > 0, digits.X > 0)
    assert make_pairs(digits, EdgeRecipe(threshold=1.0)).sketch.sum() < first.sketch.sum()


def test_pairs_need_images(tmp_path: Path) -> None:
    from latentwatch.data.pairs import EdgeRecipe, held_out_split, make_pairs

    path = tmp_path / "rows.npy"
    np.save(path, np.ones((10, 3), dtype=np.float32))
    with pytest.raises(DataError, match="pairs need images"):
        make_pairs(load_source(str(path)))
    with pytest.raises(ValueError, match="threshold"):
        EdgeRecipe(threshold=0.0)
    with pytest.raises(ValueError, match="leave none for training"):
        held_out_split(1, 0.5, 0)

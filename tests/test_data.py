"""IDX reader on synthetic bytes (each corruption), locating files, splits."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from mnist_lab.data import (
    DATASETS,
    FILES,
    DatasetInfo,
    InputStats,
    Split,
    balanced_subset,
    holdout,
    input_stats,
    load,
    parse_idx,
    read_idx,
)
from mnist_lab.errors import UserError


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


IMAGES = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)


def test_parse_roundtrip():
    assert np.array_equal(parse_idx(idx_bytes(IMAGES)), IMAGES)


@pytest.mark.parametrize("raw, message", [
    (b"", "wrong magic"),
    (b"\x01\x00\x08\x03" + b"\x00" * 12, "wrong magic"),
    (b"\x00\x00\x07\x03" + b"\x00" * 12, "wrong magic"),  # unknown dtype code
    (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
    (idx_bytes(IMAGES)[:-5], "truncated or corrupted"),
    (idx_bytes(IMAGES) + b"\x00", "truncated or corrupted"),
])
def test_parse_rejects(raw, message):
    with pytest.raises(UserError, match=message):
        parse_idx(raw)


def test_read_gz_and_raw_and_checksum(tmp_path):
    raw = idx_bytes(IMAGES)
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    digest = hashlib.sha256(raw).hexdigest()
    assert np.array_equal(read_idx(tmp_path / "a", digest), read_idx(tmp_path / "a.gz", digest))
    with pytest.raises(UserError, match="checksum mismatch"):
        read_idx(tmp_path / "a.gz", "0" * 64)


def _gz(tmp_path, array=IMAGES):
    """A .gz IDX file of `array` and the SHA-256 of its decoded bytes."""
    raw = idx_bytes(array)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    return tmp_path / "a.gz", hashlib.sha256(raw).hexdigest()


def test_decoded_cache_skips_gunzip(tmp_path, monkeypatch):
    path, digest = _gz(tmp_path)
    first = read_idx(path, digest)
    monkeypatch.setattr(gzip, "decompress", lambda raw: pytest.fail("gunzip despite the cache"))
    assert np.array_equal(read_idx(path, digest), first)


def test_decoded_cache_never_hides_a_changed_source(tmp_path):
    path, digest = _gz(tmp_path)
    read_idx(path, digest)
    path.write_bytes(gzip.compress(idx_bytes(IMAGES[::-1])))  # replaced: other bytes, same name
    with pytest.raises(UserError, match="checksum mismatch"):
        read_idx(path, digest)


def test_decoded_cache_damaged_entry_is_ignored(tmp_path):
    path, digest = _gz(tmp_path)
    read_idx(path, digest)
    entry = next((tmp_path / "cache").rglob("*.idx"))  # conftest points XDG_CACHE_HOME here
    entry.write_bytes(b"\x00" * entry.stat().st_size)
    assert np.array_equal(read_idx(path, digest), IMAGES)  # re-decoded from the source
    assert entry.read_bytes() == idx_bytes(IMAGES)  # and the entry repaired


def test_decoded_cache_unwritable_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-cache")
    path, digest = _gz(tmp_path)
    assert np.array_equal(read_idx(path, digest), IMAGES)


def test_read_corrupt_gzip(tmp_path):
    blob = bytearray(gzip.compress(idx_bytes(IMAGES)))
    (tmp_path / "t.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="cannot read"):
        read_idx(tmp_path / "t.gz")


def write_dataset(folder, n_train=20, n_test=10, n_train_labels=None):
    """Four synthetic IDX files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = {"train": (n_train, n_train_labels or n_train), "test": (n_test, n_test)}
    for part, (n_img, n_lab) in sizes.items():
        images = rng.integers(0, 256, (n_img, 28, 28), dtype=np.uint8)
        labels = np.arange(n_lab, dtype=np.uint8) % 10
        (folder / f"{FILES[part + '_images']}.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{FILES[part + '_labels']}.gz").write_bytes(gzip.compress(idx_bytes(labels)))


@pytest.fixture
def synthetic(monkeypatch):
    """A dataset entry with no known checksums, so synthetic files pass verification."""
    info = DatasetInfo("synthetic", 0.5, 0.25, sha256={}, mirrors=())
    monkeypatch.setitem(DATASETS, "synthetic", info)
    return info


def test_load_synthetic(tmp_path, synthetic):
    write_dataset(tmp_path / "synthetic")
    data = load("synthetic", tmp_path)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (20, 28, 28)
    assert len(data.test) == 10


def test_env_var_is_searched(tmp_path, synthetic, monkeypatch):
    write_dataset(tmp_path / "elsewhere" / "synthetic")
    monkeypatch.setenv("MNIST_LAB_DATA", str(tmp_path / "elsewhere"))
    assert len(load("synthetic").train) == 20


def test_count_mismatch(tmp_path, synthetic):
    write_dataset(tmp_path, n_train_labels=19)
    with pytest.raises(UserError, match="20 images but 19 labels"):
        load("synthetic", tmp_path)


def test_missing_files_name_folders_and_files(tmp_path, synthetic):
    write_dataset(tmp_path)
    (tmp_path / f"{FILES['test_labels']}.gz").unlink()
    with pytest.raises(UserError) as err:
        load("synthetic", tmp_path)
    message = str(err.value)
    assert message.startswith(f"synthetic not found in --data-dir {tmp_path}: looked in ")
    assert str(tmp_path) in message and "\n" not in message
    assert all(name in message for name in FILES.values())


def test_explicit_data_dir_is_the_only_folder_searched(tmp_path, synthetic, monkeypatch):
    """Files missing from --data-dir are an error naming it, never a fall-back to other data."""
    write_dataset(tmp_path / "elsewhere" / "synthetic")
    monkeypatch.setenv("MNIST_LAB_DATA", str(tmp_path / "elsewhere"))
    write_dataset(tmp_path / "cache" / "mnist-lab" / "synthetic")  # the user cache, too
    monkeypatch.delenv("MNIST_LAB_OFFLINE")  # and no download either
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not found in --data-dir") as err:
        load("synthetic", tmp_path / "empty")
    assert str(tmp_path / "elsewhere") not in str(err.value)
    assert str(tmp_path / "cache") not in str(err.value)
    assert len(load("synthetic").train) == 20  # without --data-dir, the others are searched


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'kmnist'"):
        load("kmnist")


def test_real_mnist_shapes(mnist):
    assert mnist.train.images.shape == (60000, 28, 28) and len(mnist.test) == 10000
    assert torch.bincount(mnist.train.labels).tolist()[:2] == [5923, 6742]


def test_holdout_is_seeded_and_disjoint(mnist):
    train, val = holdout(mnist.train, 5000, seed=1)
    again, val2 = holdout(mnist.train, 5000, seed=1)
    assert len(train) == 55000 and torch.equal(val.labels, val2.labels)
    assert not torch.equal(holdout(mnist.train, 5000, seed=2)[1].labels, val.labels)


def test_balanced_subset(mnist):
    sub = balanced_subset(mnist.train, 1000, seed=0)
    assert torch.bincount(sub.labels).tolist() == [100] * 10
    assert torch.equal(sub.images, balanced_subset(mnist.train, 1000, seed=0).images)
    with pytest.raises(UserError, match="subset size"):
        balanced_subset(mnist.train, 60001, seed=0)


def test_input_stats():
    stats = input_stats("mnist")
    assert stats == InputStats(0.1307, 0.3081)
    assert input_stats("fashion-mnist", normalize=False) == InputStats(0.0, 1.0)
    x = torch.tensor([0.0, 0.1307, 1.0])
    assert torch.allclose(stats.standardise(x), (x - 0.1307) / 0.3081)
    assert torch.equal(InputStats().standardise(x), x)
    with pytest.raises(UserError, match="unknown dataset"):
        input_stats("kmnist")


def test_split_take():
    split = Split(torch.zeros(5, 28, 28, dtype=torch.uint8), torch.arange(5))
    assert split.take(torch.tensor([4, 0])).labels.tolist() == [4, 0]


def test_download_from_mirror_verifies_and_caches(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_dataset(mirror)
    raw = {k: gzip.decompress((mirror / f"{s}.gz").read_bytes()) for k, s in FILES.items()}
    info = DatasetInfo("dl", 0.5, 0.25, {k: hashlib.sha256(b).hexdigest() for k, b in raw.items()},
                       mirrors=("file:///nonexistent/", mirror.as_uri() + "/"))
    monkeypatch.setitem(DATASETS, "dl", info)
    monkeypatch.delenv("MNIST_LAB_OFFLINE")
    assert len(load("dl").train) == 20  # first mirror fails, second is used
    cached = sorted(p.name for p in (tmp_path / "cache" / "mnist-lab" / "dl").iterdir())
    assert cached == sorted(f"{s}.gz" for s in FILES.values())  # no temporary files left


def test_download_rejects_bad_checksum(tmp_path, monkeypatch):
    write_dataset(tmp_path / "mirror")
    info = DatasetInfo("dl", 0.5, 0.25, {k: "0" * 64 for k in FILES},
                       mirrors=((tmp_path / "mirror").as_uri() + "/",))
    monkeypatch.setitem(DATASETS, "dl", info)
    monkeypatch.delenv("MNIST_LAB_OFFLINE")
    with pytest.raises(UserError, match="dl not found"):
        load("dl")
    assert list((tmp_path / "cache" / "mnist-lab" / "dl").iterdir()) == []


def test_real_fashion_mnist_checksums(data_root):
    data = load("fashion-mnist", data_root, download=False)
    assert len(data.train) == 60000 and data.info.classes[9] == "Ankle boot"

"""MNIST-family data: IDX parsing, checksums, locating/downloading files, in-memory splits.

The whole dataset lives in memory as uint8 tensors (47 MB for MNIST); batches are drawn by
random index and normalised/augmented on the whole batch at once, never per sample.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import idx_cache
from .errors import UserError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before reading it."""

    name: str
    mean: float  # per-pixel mean of the training set, on [0, 1] intensities
    std: float  # per-pixel std of the training set
    sha256: dict[str, str]  # FILES key -> sha256 of the *decompressed* IDX bytes
    mirrors: tuple[str, ...]  # base URLs holding the four .gz files
    system_dirs: tuple[str, ...] = ()  # folders an OS package installs the files to
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))


DATASETS = {
    "mnist": DatasetInfo(
        name="mnist",
        mean=0.1307,
        std=0.3081,
        sha256={
            "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        mean=0.2860,
        std=0.3530,
        sha256={
            "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes (magic 0x0000TTNN, big-endian dims, payload) into an array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{name}: wrong magic number {raw[:4].hex() or '(empty)'}; not an IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise UserError(f"{name}: truncated header ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"{name}: payload is {len(raw) - header} bytes, dimensions {dims} "
                        f"need {expected} (truncated or corrupted)")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def read_idx(path: Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, optionally verifying the decompressed SHA-256.

    A verified .gz file's decoded bytes are cached (see idx_cache), so later reads skip gunzip.
    """
    decoded = cache_dir() / "decoded"
    cached = idx_cache.lookup(decoded, path, sha256) if sha256 is not None else None
    if cached is not None:
        return parse_idx(cached, str(path))
    try:
        raw = path.read_bytes()
        compressed = raw[:2] == b"\x1f\x8b"
        if compressed:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise UserError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise UserError(f"{path}: checksum mismatch (sha256 of decompressed bytes is "
                        f"{hashlib.sha256(raw).hexdigest()[:16]}…, expected {sha256[:16]}…)")
    if sha256 is not None and compressed:
        idx_cache.keep(decoded, path, sha256, raw)
    return parse_idx(raw, str(path))


@dataclass(frozen=True)
class Split:
    """Images as uint8 [N, 28, 28] and labels as int64 [N], both in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> Split:
        """The samples at `index`."""
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: train and test splits plus its normalisation constants."""

    info: DatasetInfo
    train: Split
    test: Split


def _search_dirs(info: DatasetInfo, data_dir: str | Path | None) -> list[Path]:
    """Folders to look in: an explicit --data-dir alone, else $MNIST_LAB_DATA, the user cache
    and system folders, in order.

    An explicit folder is the only one searched: broken files there must be an error that
    names it, never a silent fall-back to other data.
    """
    if data_dir is not None:
        # Accept both the dataset folder itself and a parent holding <name>/.
        return [Path(data_dir) / info.name, Path(data_dir)]
    dirs: list[Path] = []
    if os.environ.get("MNIST_LAB_DATA"):
        dirs.append(Path(os.environ["MNIST_LAB_DATA"]) / info.name)
    dirs.append(cache_dir() / info.name)
    dirs += [Path(d) for d in info.system_dirs]
    return dirs


def cache_dir() -> Path:
    """The user cache folder where downloads go ($XDG_CACHE_HOME/mnist-lab)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-lab"


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def locate(info: DatasetInfo, data_dir: str | Path | None = None,
           download: bool = True) -> dict[str, Path]:
    """Paths of the four files: the first folder holding all four wins; else download (never
    when a folder was named explicitly)."""
    searched = _search_dirs(info, data_dir)
    for folder in searched:
        found = {key: _find_file(folder, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    names = ", ".join(f"{s}[.gz]" for s in FILES.values())
    if data_dir is not None:
        raise UserError(f"{info.name} not found in --data-dir {data_dir}: looked in "
                        f"{', '.join(map(str, searched))} for {names}")
    if download and os.environ.get("MNIST_LAB_OFFLINE") != "1":
        target = cache_dir() / info.name
        if _download(info, target):
            return {key: target / f"{stem}.gz" for key, stem in FILES.items()}
    raise UserError(f"{info.name} not found: looked in {', '.join(map(str, searched))} "
                    f"for {names}; set --data-dir or MNIST_LAB_DATA")


def _download(info: DatasetInfo, target: Path) -> bool:
    """Fetch the four .gz files from the first mirror that works; verify; rename atomically."""
    for mirror in info.mirrors:
        try:
            target.mkdir(parents=True, exist_ok=True)
            for key, stem in FILES.items():
                dest = target / f"{stem}.gz"
                if dest.exists():
                    continue
                with tempfile.NamedTemporaryFile(dir=target, delete=False) as tmp:
                    with urllib.request.urlopen(mirror + stem + ".gz", timeout=10) as resp:
                        shutil.copyfileobj(resp, tmp)
                read_idx(Path(tmp.name), info.sha256.get(key))  # raises on a bad download
                os.replace(tmp.name, dest)
            return True
        except (OSError, UserError):
            if "tmp" in locals():
                Path(tmp.name).unlink(missing_ok=True)
            continue
    return False


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


def verify(name: str = "mnist", data_dir: str | Path | None = None) -> Path:
    """Locate the dataset and check its checksums without loading it; return its folder.

    A study driver passes that folder to its workers, so every run reads the files checked here.
    """
    info = _info(name)
    paths = locate(info, data_dir)
    for key, path in paths.items():
        read_idx(path, info.sha256.get(key))
    return paths["train_images"].parent


def load(name: str = "mnist", data_dir: str | Path | None = None,
         download: bool = True) -> Dataset:
    """Load a dataset fully into memory, validating structure and checksums."""
    info = _info(name)
    paths = locate(info, data_dir, download)
    arrays = {key: read_idx(path, info.sha256.get(key)) for key, path in paths.items()}
    splits = {}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.dtype != np.uint8:
            raise UserError(f"{paths[part + '_images']}: expected uint8 images [N,H,W] "
                            f"and labels [N], got {images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise UserError(f"{paths[part + '_images']}: {len(images)} images but "
                            f"{len(labels)} labels")
        splits[part] = Split(torch.from_numpy(images.copy()),
                             torch.from_numpy(labels.astype(np.int64)))
    return Dataset(info, splits["train"], splits["test"])


@dataclass(frozen=True)
class InputStats:
    """The standardisation every model input gets: (pixel in [0, 1] - mean) / std."""

    mean: float = 0.0
    std: float = 1.0

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """The one place the formula lives: training, evaluation, inference and export."""
        return (x - self.mean) / self.std


def input_stats(dataset: str, normalize: bool = True) -> InputStats:
    """The dataset's training-set mean and std, or the identity for raw pixels."""
    info = _info(dataset)
    return InputStats(info.mean, info.std) if normalize else InputStats()


def holdout(split: Split, n_val: int, seed: int) -> tuple[Split, Split]:
    """Seeded random hold-out: (train minus n_val samples, the n_val samples)."""
    if not 0 < n_val < len(split):
        raise UserError(f"validation size must be between 1 and {len(split) - 1}, got {n_val}")
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.take(perm[n_val:].sort().values), split.take(perm[:n_val].sort().values)


def balanced_subset(split: Split, n: int, seed: int) -> Split:
    """Seeded class-balanced subset of n samples (n // classes per class, remainder spread)."""
    classes = int(split.labels.max()) + 1
    if not classes <= n <= len(split):
        raise UserError(f"subset size must be between {classes} and {len(split)}, got {n}")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(classes):
        want = n // classes + (1 if c < n % classes else 0)
        members = (split.labels == c).nonzero().flatten()
        if want > len(members):
            raise UserError(f"subset of {n} needs {want} samples of class {c}, "
                            f"only {len(members)} exist")
        picks.append(members[torch.randperm(len(members), generator=g)[:want]])
    return split.take(torch.cat(picks).sort().values)

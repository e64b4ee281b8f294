"""The MNIST-C corruptions: every registered one is seeded, changes the digits and keeps their
format; the corrupted set is cached once, and a tampered or stale cache is rebuilt."""

import numpy as np
import pytest

from mnist_lab.errors import UserError
from mnist_lab.robust import corrupted_set
from mnist_lab.robust.corrupted_set import example_grid, load_or_build
from mnist_lab.robust.corruptions import CORRUPTIONS, corrupt

MNIST_C = ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
           "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag",
           "canny_edges"]
DETERMINISTIC = {"scale", "brightness", "stripe", "canny_edges"}  # no randomness by design


@pytest.fixture(scope="module")
def images(data_root):
    """The first 64 real test digits, uint8 [64, 28, 28]."""
    from mnist_lab.data import load
    return load("mnist", data_root, download=False).test.images[:64].numpy()


def test_registry_is_mnist_c_in_order():
    assert list(CORRUPTIONS) == MNIST_C
    assert DETERMINISTIC <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_keeps_format_and_changes_every_digit(name, images):
    out = corrupt(name, images, seed=0)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert (out != images).any(axis=(1, 2)).all()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_is_seeded(name, images):
    first = corrupt(name, images, seed=3)
    assert np.array_equal(first, corrupt(name, images, seed=3))  # byte-identical
    other = corrupt(name, images, seed=4)
    if name in DETERMINISTIC:
        assert np.array_equal(first, other)
    else:
        assert not np.array_equal(first, other)


def test_each_corruption_draws_its_own_stream(images):
    """corrupt(name, seed) runs on default_rng([seed, index of name]): one stream per name."""
    for index, name in enumerate(("shot_noise", "impulse_noise")):
        rng = np.random.default_rng([5, index])
        assert np.array_equal(corrupt(name, images, 5), CORRUPTIONS[name](images, rng))


def test_unknown_name_and_bad_images_are_user_errors(images):
    with pytest.raises(UserError, match="unknown corruption 'snow'.*shot_noise.*canny_edges"):
        corrupt("snow", images, 0)
    with pytest.raises(UserError, match="uint8 images"):
        corrupt("fog", images.astype(np.float32), 0)
    with pytest.raises(UserError, match="uint8 images"):
        corrupt("fog", images[:, :14], 0)
    assert corrupt("zigzag", images[:0], 0).shape == (0, 28, 28)  # an empty batch is no error


@pytest.fixture
def spy(monkeypatch):
    """Counts the builds load_or_build runs."""
    calls = []
    real = corrupted_set.build

    def counting_build(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(corrupted_set, "build", counting_build)
    return calls


def test_cache_is_built_once_then_loaded(tmp_path, images, spy, capsys):
    path = tmp_path / "cache" / "mnist-c.npz"
    built = load_or_build(images[:16], 0, path)
    loaded = load_or_build(images[:16], 0, path)
    assert len(spy) == 1 and capsys.readouterr().err == ""
    assert list(loaded) == MNIST_C
    assert all(np.array_equal(built[n], loaded[n]) and loaded[n].dtype == np.uint8 for n in built)
    assert sorted(p.name for p in path.parent.iterdir()) == ["mnist-c.npz", "mnist-c.npz.json"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar"])
def test_tampered_cache_is_detected_and_rebuilt(tmp_path, images, spy, capsys, damage):
    path = tmp_path / "mnist-c.npz"
    built = load_or_build(images[:16], 0, path)
    if damage == "flip":  # a few bytes inside one array: np.load alone would not notice
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2:len(raw) // 2 + 4] = bytes(255 - b for b in raw[len(raw) // 2:][:4])
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.with_name(path.name + ".json").write_text("{not json")
    rebuilt = load_or_build(images[:16], 0, path)
    err = capsys.readouterr().err
    assert err == f"corrupted test set at {path} failed its checksum; rebuilding\n"
    assert len(spy) == 2 and all(np.array_equal(built[n], rebuilt[n]) for n in built)
    load_or_build(images[:16], 0, path)  # the rebuilt cache is sound again
    assert len(spy) == 2


def test_changed_seed_or_images_rebuild(tmp_path, images, spy, capsys):
    path = tmp_path / "mnist-c.npz"
    first = load_or_build(images[:16], 0, path)
    reseeded = load_or_build(images[:16], 1, path)
    assert len(spy) == 2 and "is stale (other seed); rebuilding" in capsys.readouterr().err
    assert not np.array_equal(first["fog"], reseeded["fog"])
    load_or_build(images[16:32], 1, path)
    assert len(spy) == 3 and "is stale (other clean images); rebuilding" in capsys.readouterr().err


def test_example_grid_has_a_labelled_row_per_corruption(images):
    fig = example_grid(images, seed=0, n=3)
    axes = fig.get_axes()
    assert len(axes) == 3 * (1 + len(CORRUPTIONS))
    labels = [ax.get_ylabel() for ax in axes[::3]]
    assert labels == ["clean", *CORRUPTIONS]

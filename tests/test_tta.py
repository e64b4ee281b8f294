"""Test-time augmentation: the views are what they say, and the evaluation averages them."""

import dataclasses
import json

import pytest
import torch

from mnist_lab.config import TTA_VIEWS, TrainConfig
from mnist_lab.data import Split, input_stats
from mnist_lab.errors import UserError
from mnist_lab.evaluate import evaluate
from mnist_lab.store import load_checkpoint
from mnist_lab.train import make_splits, train
from mnist_lab.tta import VIEW_SETS, views


def _digits(n: int = 4, seed: int = 0) -> torch.Tensor:
    """Random pixels in [0, 1] with a black border, [n, 1, 28, 28]."""
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    x[..., :3, :] = x[..., -3:, :] = x[..., :, :3] = x[..., :, -3:] = 0
    return x


def test_the_cli_offers_every_view_set():
    assert tuple(VIEW_SETS) == TTA_VIEWS


@pytest.mark.parametrize("name", TTA_VIEWS)
def test_views_start_with_the_image_itself(name):
    x = _digits()
    out = views(x, name)
    assert len(out) == 1 + len(VIEW_SETS[name])
    assert out[0] is x
    assert all(v.shape == x.shape for v in out)


def test_a_one_pixel_shift_is_exact():
    """Bilinear sampling at a whole-pixel offset moves every pixel, unblurred."""
    x = _digits()
    right, left, down, up = views(x, "shift1")[1:]
    torch.testing.assert_close(right, torch.roll(x, 1, dims=3))  # the border is black
    torch.testing.assert_close(left, torch.roll(x, -1, dims=3))
    torch.testing.assert_close(down, torch.roll(x, 1, dims=2))
    torch.testing.assert_close(up, torch.roll(x, -1, dims=2))


def test_rotations_turn_five_degrees_each_way():
    """A blob 8.5 pixels right of the centre moves 8.5 sin 5° = 0.74 pixels up, then down."""
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    x = torch.exp(-((rows - 13.5) ** 2 + (cols - 22.0) ** 2) / 4.0)[None, None]
    minus, plus = views(x, "rot5")[1:]

    def row_of(img: torch.Tensor) -> float:
        return float((img[0, 0] * rows).sum() / img.sum())
    assert row_of(x) == pytest.approx(13.5)
    shifts = sorted([row_of(minus) - 13.5, row_of(plus) - 13.5])
    assert shifts == pytest.approx([-0.74, 0.74], abs=0.05)
    torch.testing.assert_close(minus.sum(), x.sum(), rtol=0.01, atol=0)  # the ink is kept


def test_evaluation_averages_the_views(stored_runs, mnist):
    """The TTA probabilities are the mean of the model's softmax over the copies."""
    model, cfg = load_checkpoint(stored_runs.best.checkpoint)
    stats, cpu = input_stats(cfg.dataset), torch.device("cpu")
    split = Split(mnist.test.images[:200], mnist.test.labels[:200])
    got = evaluate(model, split, stats, cpu, "shift1")
    with torch.inference_mode():
        x = split.images.unsqueeze(1).float() / 255
        want = torch.stack([torch.softmax(model(stats.standardise(v)), 1)
                            for v in views(x, "shift1")]).mean(0)
    torch.testing.assert_close(torch.from_numpy(got.probabilities), want, atol=1e-5, rtol=0)
    assert got.accuracy == float((want.argmax(1) == split.labels).float().mean())
    plain = evaluate(model, split, stats, cpu)
    with torch.inference_mode():
        loss = torch.nn.functional.cross_entropy(model(stats.standardise(x)), split.labels)
    assert plain.loss == pytest.approx(loss.item(), rel=1e-5)


def test_evaluate_command_with_tta(stored_runs, data_root, cli):
    code, out, _ = cli("evaluate", stored_runs.best.checkpoint, "--tta", "rot5+shift1",
                       "--json", "--data-dir", data_root)
    assert code == 0
    result = json.loads(out)
    assert result["tta"] == "rot5+shift1"
    assert result["test_accuracy"] > 0.97  # 1 epoch on all of MNIST: ~99% with one view
    code, out, _ = cli("evaluate", stored_runs.best.checkpoint, "--tta", "shift1",
                       "--data-dir", data_root)
    assert code == 0 and "(TTA shift1): accuracy" in out


@pytest.mark.parametrize("args, phrase", [
    (("--tta", "shift1", "--suite", "calibration"), "--tta applies to the test-set evaluation"),
    (("--tta", "flip"), "invalid choice: 'flip'"),
])
def test_tta_bad_input(stored_runs, data_root, cli, assert_one_line_error, args, phrase):
    code, out, err = cli("evaluate", stored_runs.best.checkpoint, *args,
                         "--data-dir", data_root)
    assert_one_line_error(code, err, phrase)
    assert out == ""


def test_only_the_last_epochs_evaluation_has_views():
    for cfg in (TrainConfig(epochs=3, tta="rot5"),
                TrainConfig(epochs=3, tta="rot5", stop_at_accuracy=0.99)):
        assert [cfg.views_at(e) for e in (1, 2, 3)] == ["none", "none", "rot5"]


def test_a_run_with_tta_is_scored_with_its_views(mnist):
    """The run's figures and stored outputs are the TTA evaluation of its final model; the
    epochs before it are measured as without TTA, so the two runs share them."""
    small = dict(epochs=2, subset=1000, test_subset=500, rotate=0, translate=0, threads=1)
    with_tta = train(TrainConfig(**small, tta="shift1"), mnist)
    without = train(TrainConfig(**small), mnist)
    first = [dataclasses.replace(o.history[0], seconds=None) for o in (with_tta, without)]
    assert first[0] == first[1]
    test = make_splits(TrainConfig(**small), mnist)[2]
    want = evaluate(with_tta.model, test, input_stats("mnist"), torch.device("cpu"), "shift1")
    assert with_tta.history[-1].test_accuracy == want.accuracy
    torch.testing.assert_close(with_tta.test_outputs.probabilities.astype("float32"),
                               want.probabilities, atol=1e-3, rtol=0)
    assert TrainConfig(**small).key() != TrainConfig(**small, tta="shift1").key()
    assert TrainConfig().key() == TrainConfig(tta="none").key()


def test_tta_bad_settings(mnist, cli, assert_one_line_error):
    with pytest.raises(UserError, match="test-time augmentation needs a torch model"):
        train(TrainConfig(model="logreg", tta="rot5", subset=100), mnist)
    with pytest.raises(UserError, match="tta must be one of none, rot5"):
        TrainConfig(tta="flip").validate()
    code, _, err = cli("train", "--tta", "flip")
    assert_one_line_error(code, err, "invalid choice: 'flip'")

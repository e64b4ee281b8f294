"""The `mnist-lab` CLI end to end on real MNIST, and every bad input.

A bad input must end in exit code 2, one line on stderr, no traceback, and nothing stored.
Training is kept short: two 1-epoch runs per module (2,000 and 10,000 images).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lab.data import DATASETS, FILES, locate
from mnist_lab.store import Store
from mnist_lab.study import SHIPPED

TEST_LABELS = FILES["test_labels"] + ".gz"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """On a busy 2-core machine one thread is ~3x faster than two; results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root, train_json):
    """One store with a small run (2,000 images) and a decent one (10,000 images, ~97%).

    Batch 32 for the decent run: 1 epoch at the default 128 is only 79 steps (~84%).
    """
    runs = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_LAB_OFFLINE", "1")
        mp.setenv("XDG_CACHE_HOME", str(runs / "cache"))
        common = ("--data-dir", data_root, "--runs-dir", runs)
        small = train_json("--subset", 2000, "--batch-size", 64, *common)
        good = train_json("--subset", 10000, "--batch-size", 32, *common)
    return SimpleNamespace(runs=runs, small=small, good=good)


@pytest.fixture(scope="module")
def digits(mnist) -> list[tuple[np.ndarray, int]]:
    """The first five test images; they happen to be of five different classes (7 2 1 0 4)."""
    picks = [(mnist.test.images[i].numpy(), int(mnist.test.labels[i])) for i in range(5)]
    assert len({label for _, label in picks}) == 5
    return picks


@pytest.fixture
def scans(tmp_path, digits, scan_png) -> list[tuple[Path, int]]:
    return [(scan_png(img, tmp_path / f"scan{i}.png"), label)
            for i, (img, label) in enumerate(digits)]


# ---------------------------------------------------------------- the happy path

def test_help_console_script(script):
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "models", "runs"):
        assert command in result.stdout


def test_bad_command_subprocess_has_no_traceback(tmp_path, assert_one_line_error,
                                                 assert_nothing_stored, script):
    env = dict(os.environ, MNIST_LAB_RUNS=str(tmp_path / "runs"), MNIST_LAB_OFFLINE="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    result = subprocess.run([script, "predict", str(tmp_path / "missing.png")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "no such file")
    assert result.stdout == ""
    assert_nothing_stored(tmp_path / "runs")


def test_train_json_record(trained):
    record = trained.small
    assert record["status"] == "complete"
    assert record["params"] == 7432
    assert 0 < record["final"]["test_accuracy"] < 1
    assert len(record["history"]) == 1
    assert Path(record["checkpoint"]).is_file()
    assert Path(record["checkpoint"]).is_relative_to(trained.runs)


def test_runs_list(trained, cli):
    code, out, err = cli("runs", "--runs-dir", trained.runs)
    assert code == 0
    assert trained.small["id"] in out and trained.good["id"] in out
    assert "2 run(s)" in err


def test_runs_show_by_prefix(trained, cli):
    prefix = trained.small["id"][:-3]
    assert not trained.good["id"].startswith(prefix)
    code, out, _ = cli("runs", "show", prefix, "--runs-dir", trained.runs)
    assert code == 0
    assert trained.small["id"] in out
    assert "epoch   1" in out


def test_runs_show_json(trained, cli):
    run_id = trained.small["id"]
    code, out, _ = cli("runs", "show", run_id, "--json", "--runs-dir", trained.runs)
    assert code == 0
    record = json.loads(out)
    assert record["id"] == run_id
    assert record["final"] == pytest.approx(trained.small["final"])


def test_evaluate_human(trained, data_root, cli):
    code, out, _ = cli("evaluate", trained.small["checkpoint"],
                       "--data-dir", data_root)
    assert code == 0
    assert "compact_step3 on mnist test: accuracy" in out
    assert "most confused" in out


def test_evaluate_json_matches_training(trained, data_root, cli):
    code, out, _ = cli("evaluate", trained.small["checkpoint"], "--json",
                       "--data-dir", data_root)
    assert code == 0
    result = json.loads(out)
    assert result["params"] == 7432
    assert result["test_accuracy"] == pytest.approx(trained.small["final"]["test_accuracy"],
                                              abs=1e-3)


def test_models(cli):
    code, out, _ = cli("models")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "7,432" in lines["compact_step3"]
    assert "logreg" in lines


def test_predict_scans_mostly_right(trained, scans, cli):
    paths = [p for p, _ in scans]
    code, out, _ = cli("predict", *paths, "--json",
                       "--checkpoint", trained.good["checkpoint"])
    assert code == 0
    predicted = [p["digit"] for p in json.loads(out)["predictions"]]
    correct = sum(d == label for d, (_, label) in zip(predicted, scans, strict=True))
    assert correct >= 4, (predicted, [label for _, label in scans])


def test_predict_json_probabilities(trained, scans, cli):
    path = scans[0][0]
    code, out, _ = cli("predict", path, "--json",
                       "--checkpoint", trained.good["checkpoint"])
    assert code == 0
    (prediction,) = json.loads(out)["predictions"]
    probs = prediction["probabilities"]
    assert len(probs) == 10
    assert sum(probs) == pytest.approx(1, abs=1e-4)
    assert prediction["digit"] == int(np.argmax(probs))
    assert prediction["file"] == str(path)


def test_predict_human_one_line_per_image(trained, scans, cli):
    paths = [p for p, _ in scans[:2]]
    code, out, _ = cli("predict", *paths, "--checkpoint", trained.good["checkpoint"])
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(p) for p in paths]


def test_predict_defaults_to_best_stored_run(trained, scans, cli):
    code, out, _ = cli("predict", scans[0][0], "--json", "--runs-dir", trained.runs)
    assert code == 0
    best = max((trained.small, trained.good), key=lambda r: r["final"]["test_accuracy"])
    assert json.loads(out)["checkpoint"] == best["checkpoint"]


def test_store_given_as_relative_path_works_from_elsewhere(tmp_path, monkeypatch, data_root, scans,
                                                           cli, train_json):
    """Records name checkpoints by absolute path: a relative --runs-dir must not leak into them."""
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    record = train_json("--model", "softmax", "--subset", 1000, "--test-subset", 500,
                        "--data-dir", data_root, "--runs-dir", "runs")
    assert Path(record["checkpoint"]).is_absolute()
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("predict", scans[0][0], "--runs-dir", "a/runs")
    assert code == 0 and out


# ---------------------------------------------------------------- bad command lines

@pytest.fixture
def bad_files(tmp_path, digits, scan_png) -> Path:
    """A text file named .png, a truncated PNG, random bytes named .safetensors."""
    (tmp_path / "x.png").write_text("not a picture\n")
    scan_png(digits[0][0], tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "junk.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    return tmp_path


TRAIN = ("train", "--no-progress", "--epochs", "1", "--data-dir", "{data}", "--runs-dir", "{runs}")


@pytest.mark.parametrize("argv, phrase", [
    pytest.param((*TRAIN, "--model", "nope"), "unknown model 'nope'", id="unknown-model"),
    pytest.param((*TRAIN, "--dataset", "nope"), "unknown dataset 'nope'", id="unknown-dataset"),
    pytest.param((*TRAIN, "--lr=-0.1"), "learning rate must be > 0", id="negative-lr"),
    pytest.param((*TRAIN, "--batch-size", "0"), "batch size must be >= 1", id="zero-batch"),
    pytest.param((*TRAIN, "--subset", "70000"), "subset size must be between", id="big-subset"),
    pytest.param((*TRAIN, "--lr", "abc"), "invalid float value: 'abc'", id="lr-not-a-number"),
    pytest.param((*TRAIN, "--ema", "1"), "ema is a decay per step in [0, 1), got 1", id="ema-1"),
    pytest.param((*TRAIN, "--elastic=-1"), "augmentation ranges must be >= 0",
                 id="negative-elastic"),
    *[pytest.param((*TRAIN, *flags), phrase, id=f"overflow-{'-'.join(flags)}")
      for flags, phrase in [
          (("--lr", "1e40"), "lr must be a finite number within float32's range"),
          (("--weight-decay", "1e300"), "weight decay must be a finite number"),
          (("--momentum", "1e300"), "momentum must be a finite number"),
          (("--optimizer", "adam", "--lr", "1e40"), "lr must be a finite number"),
          (("--optimizer", "adamw", "--weight-decay", "1e300"), "weight decay must be"),
          (("--optimizer", "adadelta", "--lr", "1e300"), "lr must be a finite number"),
          (("--lr", "inf"), "got inf"), (("--l2", "nan"), "l2 must be a finite number")]],
    pytest.param(("predict", "{tmp}/missing.png"), "no such file", id="predict-missing"),
    pytest.param(("predict", "{tmp}/x.png"), "not a readable image", id="predict-text"),
    pytest.param(("predict", "{tmp}/cut.png"), "not a readable image", id="predict-truncated"),
    pytest.param(("predict", "{tmp}/blank.png"), "blank.png has no contrast", id="predict-blank"),
    pytest.param(("predict", "{tmp}/whole.png", "--runs-dir", "{runs}"), "no stored checkpoint",
                 id="predict-empty-store"),
    pytest.param(("evaluate", "{tmp}/junk.safetensors"), "not an mnist-lab checkpoint",
                 id="evaluate-junk"),
    pytest.param(("evaluate", "{tmp}/missing.safetensors"), "no such checkpoint",
                 id="evaluate-missing"),
    pytest.param(("runs", "show", "nosuchid", "--runs-dir", "{runs}"), "no run matches",
                 id="runs-show-unknown"),
    pytest.param(("runs", "show", "--runs-dir", "{runs}"), "needs a run id", id="runs-show-no-id"),
    pytest.param(("fly",), "invalid choice: 'fly'", id="unknown-command"),
    pytest.param(("study", "run", "nope"), "shipped studies (augmentation, compact-cnn,",
                 id="unknown-study"),
    pytest.param(("study", "run"), "needs a study", id="study-run-no-name"),
    pytest.param(("study", "run", "augmentation", "--gpus-per-run", "1"),
                 "--gpus-per-run takes a number >= 0, with --executor ray", id="gpus-local"),
])
def test_bad_input(bad_files, data_root, argv, phrase, cli, assert_one_line_error,
                   assert_nothing_stored):
    runs = bad_files / "runs"
    args = [a.format(tmp=bad_files, data=data_root, runs=runs) for a in argv]
    code, out, err = cli(*args)
    assert_one_line_error(code, err, phrase)
    assert out == ""
    assert_nothing_stored(runs)


# ---------------------------------------------------------------- bad data

def test_missing_data_files_named(tmp_path, monkeypatch, cli, assert_one_line_error,
                                  assert_nothing_stored):
    monkeypatch.delenv("MNIST_LAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("train", "--data-dir", empty, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, "mnist not found")
    for stem in FILES.values():
        assert stem in err
    assert f"in --data-dir {empty}" in err and str(empty / "mnist") in err
    assert "cache" not in err  # an explicit folder is the only one searched
    assert_nothing_stored(tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # bad data fails before the results folder is made


@pytest.mark.parametrize("command", ["train", "study"])
def test_explicit_data_dir_never_falls_back(tmp_path, monkeypatch, data_root, command, cli,
                                            assert_one_line_error, assert_nothing_stored):
    """Broken files in --data-dir are an error naming it, even with good data elsewhere."""
    monkeypatch.setenv("MNIST_LAB_DATA", str(data_root))  # valid: must not be used
    folder = tmp_path / "mine" / "mnist"
    folder.mkdir(parents=True)
    for path in locate(DATASETS["mnist"], data_root, download=False).values():
        shutil.copy(path, folder / path.name)
    (folder / TEST_LABELS).write_bytes(b"broken")
    argv = (("train", "--epochs", "1") if command == "train"
            else ("study", "run", "augmentation", "--quick"))
    code, out, err = cli(*argv, "--data-dir", tmp_path / "mine", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, str(folder / TEST_LABELS))
    assert out == ""
    assert not (tmp_path / "runs").exists()


def _truncate(gz: bytes) -> bytes:
    return gz[:len(gz) // 2]


def _flip_middle(gz: bytes) -> bytes:
    """XOR 16 bytes in the middle of the deflate stream (the CRC catches it)."""
    b = bytearray(gz)
    for i in range(len(b) // 2, len(b) // 2 + 16):
        b[i] ^= 0xFF
    return bytes(b)


def _bad_deflate(gz: bytes) -> bytes:
    """A gzip header, then a deflate block of the reserved type 3: gzip raises zlib.error."""
    fresh = gzip.compress(gzip.decompress(gz))  # 10-byte header (no file name field)
    return fresh[:10] + b"\x07" + fresh[11:]


def _one_label_changed(gz: bytes) -> bytes:
    raw = bytearray(gzip.decompress(gz))
    raw[8] = (raw[8] + 1) % 10  # first label; structure stays valid
    return gzip.compress(bytes(raw))


@pytest.mark.parametrize("corrupt, phrase", [
    pytest.param(_truncate, "cannot read", id="truncated-gz"),
    pytest.param(_flip_middle, "cannot read", id="flipped-bytes"),
    pytest.param(_bad_deflate, "cannot read", id="invalid-deflate"),
    pytest.param(_one_label_changed, "checksum mismatch", id="checksum-mismatch"),
])
def test_corrupted_real_file(tmp_path, data_root, corrupt, phrase, cli, assert_one_line_error,
                             assert_nothing_stored):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for path in locate(DATASETS["mnist"], data_root, download=False).values():
        shutil.copy(path, folder / path.name)
    target = folder / TEST_LABELS
    target.write_bytes(corrupt(target.read_bytes()))
    code, out, err = cli("train", "--epochs", "1", "--subset", "100", "--no-progress",
                         "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, phrase)
    assert str(target) in err
    assert out == ""
    assert_nothing_stored(tmp_path / "runs")


@pytest.fixture
def unverified(monkeypatch):
    """MNIST without known checksums, so structural checks are reached on synthetic files."""
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], sha256={}))


@pytest.fixture
def synthetic(idx_gz):
    """synthetic(folder, ...): a small random dataset of valid IDX files (optionally broken)."""
    def write(folder: Path, n_train_labels: int = 50, test_magic: bytes = b"\x00\x00\x08"):
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        idx_gz(folder / (FILES["train_images"] + ".gz"), rng.integers(0, 256, (50, 28, 28)))
        idx_gz(folder / (FILES["train_labels"] + ".gz"), np.arange(n_train_labels) % 10)
        idx_gz(folder / (FILES["test_images"] + ".gz"), rng.integers(0, 256, (20, 28, 28)))
        idx_gz(folder / TEST_LABELS, np.arange(20) % 10, magic=test_magic)
    return write


@pytest.mark.parametrize("kwargs, phrase", [
    pytest.param({"n_train_labels": 40}, "50 images but 40 labels", id="count-mismatch"),
    pytest.param({"test_magic": b"\x01\x02\x03"}, "wrong magic number", id="bad-magic"),
])
def test_structurally_bad_dataset(tmp_path, unverified, synthetic, kwargs, phrase, cli,
                                  assert_one_line_error, assert_nothing_stored):
    synthetic(tmp_path / "data" / "mnist", **kwargs)
    code, out, err = cli("train", "--epochs", "1", "--no-progress",
                         "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, phrase)
    assert out == ""
    assert_nothing_stored(tmp_path / "runs")


def test_synthetic_dataset_is_otherwise_valid(tmp_path, unverified, synthetic, cli):
    """Control for the two cases above: the untouched synthetic dataset trains."""
    synthetic(tmp_path / "data" / "mnist")
    code, out, err = cli("train", "--epochs", "1", "--batch-size", "10", "--json",
                         "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert json.loads(out)["status"] == "complete"
    assert len(Store(tmp_path / "runs").runs()) == 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adadelta"])
def test_update_too_large_for_float32_is_a_divergence(tmp_path, data_root, optimizer, cli):
    """lr 3e38 is a float32, but Adam's bias correction overflows it: recorded, no traceback."""
    code, out, err = cli("train", "--optimizer", optimizer, "--lr", "3e38", "--epochs", "1",
                         "--subset", "500", "--test-subset", "100", "--json",
                         "--data-dir", data_root, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert json.loads(out)["status"] == "diverged"


# ---------------------------------------------------------------- a newcomer's rough edges

def test_bare_command_prints_help(cli):
    code, out, err = cli()
    assert code == 0 and "usage: mnist-lab" in out and "train" in out and err == ""


def test_evaluate_takes_a_run_id_prefix(trained, data_root, cli):
    prefix = trained.small["id"][:-3]
    code, out, _ = cli("evaluate", prefix, "--json", "--data-dir", data_root,
                       "--runs-dir", trained.runs)
    assert code == 0
    result = json.loads(out)
    assert result["source"] == trained.small["id"]
    assert result["test_accuracy"] == pytest.approx(trained.small["final"]["test_accuracy"],
                                                    abs=1e-3)


def test_tables_have_headers_and_readable_numbers(trained, cli):
    _, out, _ = cli("models")
    assert out.splitlines()[0].split() == ["model", "kind", "params", "source"]
    _, out, _ = cli("runs", "--runs-dir", trained.runs)
    assert out.splitlines()[0].split()[:4] == ["id", "status", "model", "dataset"]
    _, out, _ = cli("runs", "show", trained.small["id"], "--runs-dir", trained.runs)
    wall = next(line for line in out.splitlines() if "wall_seconds" in line)
    assert wall.split(":")[1].strip().count(".") == 1 and len(wall.split(".")[-1]) == 1


def test_predict_json_probabilities_are_rounded(trained, scans, cli):
    _, out, _ = cli("predict", scans[0][0], "--json", "--checkpoint", trained.good["id"],
                    "--runs-dir", trained.runs)
    for p in json.loads(out)["predictions"][0]["probabilities"]:
        assert p == round(p, 6) and len(repr(p)) <= 10  # 4e-06, not 3.999999989900971e-06


def test_study_list_names_the_shipped_studies(cli):
    code, out, _ = cli("study", "list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names == sorted(p.stem for p in SHIPPED.glob("*.toml"))  # every file, in order


def test_quick_runs_are_pointed_to(tmp_path, data_root, cli, assert_one_line_error):
    """A report or listing without --quick after a quick run says where the runs are."""
    runs = tmp_path / "runs"
    code, _, err = cli("study", "run", "augmentation", "--quick", "--no-progress",
                       "--data-dir", data_root, "--runs-dir", runs)
    assert code == 0, err
    code, _, err = cli("study", "report", "augmentation", "--runs-dir", runs)
    assert_one_line_error(code, err, "its quick runs are stored: add --quick")
    code, _, err = cli("runs", "--study", "augmentation", "--runs-dir", runs)
    assert code == 0 and "stored as augmentation:quick" in err
    code, _, err = cli("study", "report", "augmentation", "--quick", "--runs-dir", runs,
                       "--out", tmp_path / "report")
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "not comparable" in report and "99.02%" not in report and " pp" not in report

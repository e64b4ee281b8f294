"""Models from user code: a file `path.py:Name` (a class or a factory) and an installed package's
entry point train, land in the store with the file's path and hash, and load back wherever a
model name works; a changed or missing file is refused in one line; `models check` says which
checks a model fails."""

import importlib.metadata
import json
import multiprocessing
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from torch import nn

from mnist_lab.config import RunContext, TrainConfig
from mnist_lab.errors import UserError
from mnist_lab.models import build_model, count_params
from mnist_lab.record import StudyLabel
from mnist_lab.store import Store, load_checkpoint, save_checkpoint
from mnist_lab.user_models import GROUP, resolve_model, sha256_of
from mnist_lab.worker import run_one

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """A strided conv, pooled to 4x4, then a linear layer: 1,370 parameters at width 8."""

    def __init__(self, width: int = 8, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, stride=2), nn.ReLU(),
                                  nn.Dropout(dropout), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(width * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny(hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def five_classes() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))


WIDTH = 8
'''
SMALL = ("--subset", 1000, "--test-subset", 500, "--batch-size", 64, "--rotate", 0,
         "--translate", 0)


def write_net(folder: Path, text: str = NET, name: str = "net.py") -> Path:
    """A model file in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def digit_png(path: Path) -> Path:
    """A white vertical stroke on black: a '1', enough for a prediction."""
    image = np.zeros((28, 28), np.uint8)
    image[5:23, 13:16] = 255
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_json, data_root) -> SimpleNamespace:
    """Net from a user file, trained 1 epoch on 1,000 images into a store of its own."""
    root = tmp_path_factory.mktemp("user_models")
    file, runs = write_net(root / "code"), root / "runs"
    record = train_json("--model", f"{file}:Net", "--model-arg", "width=4", *SMALL,
                        "--data-dir", data_root, "--runs-dir", runs, "--no-progress")
    return SimpleNamespace(root=root, file=file, runs=runs, record=record)


def test_a_model_class_trains_and_its_file_is_recorded(trained):
    config = trained.record["config"]
    assert trained.record["status"] == "complete" and config["model"] == "net.py:Net"
    assert config["model_source"] == {"path": str(trained.file),
                                      "sha256": sha256_of(trained.file.read_bytes())}
    assert trained.record["params"] == 4 * 9 + 4 + 4 * 16 * 10 + 10
    with Store(trained.runs) as store:
        stored = store.get(trained.record["id"])
    assert stored.config.model_source["path"] == str(trained.file)
    assert stored.key == stored.config.key() and Path(stored.checkpoint).is_file()


def test_a_factory_trains_with_model_args(cli, tmp_path, data_root):
    file = write_net(tmp_path / "code")
    code, out, err = cli("train", "--model", f"{file}:tiny", "--model-arg", "hidden=8", *SMALL,
                         "--epochs", 1, "--data-dir", data_root, "--no-progress", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["config"]["model_kwargs"] == {"hidden": 8}
    assert record["params"] == 784 * 8 + 8 + 8 * 10 + 10


def test_the_file_bytes_enter_the_key_not_its_place(tmp_path, monkeypatch):
    file = write_net(tmp_path / "a")
    cfg = resolve_model(TrainConfig(model=f"{file}:Net"))
    assert cfg.model == "net.py:Net" and cfg.model_source["path"] == str(file)
    monkeypatch.chdir(tmp_path)
    assert resolve_model(TrainConfig(model="a/net.py:Net")).key() == cfg.key()  # typed apart
    moved = write_net(tmp_path / "b")  # the same bytes elsewhere: the same experiment
    assert resolve_model(TrainConfig(model=f"{moved}:Net")).key() == cfg.key()
    file.write_text(file.read_text() + "# an edit\n")
    assert resolve_model(TrainConfig(model=f"{file}:Net")).key() != cfg.key()
    other = resolve_model(TrainConfig(model=f"{moved}:tiny"))
    assert other.key() != cfg.key()
    # Built-in models' configs, and so every stored run's key, are as before model files.
    assert TrainConfig().key() == "6506f1fd06e92f84"


def test_its_checkpoint_evaluates_predicts_exports_and_serves(trained, cli, tmp_path, data_root):
    run_id, runs = trained.record["id"], trained.runs
    code, out, err = cli("evaluate", run_id, "--runs-dir", runs, "--data-dir", data_root,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == "net.py:Net"
    code, out, err = cli("predict", digit_png(tmp_path / "one.png"), "--checkpoint", run_id,
                         "--runs-dir", runs, "--json")
    assert code == 0, err
    assert 0 <= json.loads(out)["predictions"][0]["digit"] <= 9
    code, out, err = cli("export", run_id, "--format", "torchscript", "--out", tmp_path,
                         "--runs-dir", runs, "--json")
    assert code == 0, err
    assert Path(json.loads(out)["path"]).is_file()
    testclient = pytest.importorskip("fastapi.testclient")  # the serve extra
    from mnist_lab.serve import create_app

    with testclient.TestClient(create_app(runs, run_id)) as client:
        image = np.zeros((28, 28), int)
        image[5:23, 13:16] = 255
        response = client.post("/predict", json={"image": image.tolist()})
    assert response.status_code == 200 and response.json()["model"] == run_id


def test_a_changed_or_missing_file_is_refused(cli, tmp_path, assert_one_line_error):
    file = write_net(tmp_path / "code")
    cfg = resolve_model(TrainConfig(model=f"{file}:Net"))
    checkpoint = tmp_path / "net.safetensors"
    save_checkpoint(checkpoint, build_model(cfg), cfg)
    want = f"checkpoint {checkpoint} needs model file {file} with sha256 " \
           f"{cfg.model_source['sha256'][:16]}…"
    original = file.read_bytes()
    file.write_text(file.read_text() + "# an edit\n")
    for command in (("evaluate", checkpoint), ("export", checkpoint, "--out", tmp_path),
                    ("predict", digit_png(tmp_path / "one.png"), "--checkpoint", checkpoint)):
        code, _, err = cli(*command)
        assert_one_line_error(code, err, want)
        assert f"the file has sha256 {sha256_of(file.read_bytes())[:16]}…" in err
    file.unlink()
    code, _, err = cli("evaluate", checkpoint)
    assert_one_line_error(code, err, f"{want}; the file is missing")
    file.write_bytes(original)  # the file as it was: the checkpoint loads again
    model, loaded = load_checkpoint(checkpoint)
    assert loaded == cfg and count_params(model) == 1370


def test_models_check_passes_a_good_model_and_fails_a_bad_one(cli, tmp_path):
    file = write_net(tmp_path)
    code, out, _ = cli("models", "check", f"{file}:Net", "--model-arg", "width=4")
    assert code == 0 and "all 6 checks passed" in out
    assert "ok      parameters     690 trainable" in out
    code, out, _ = cli("models", "check", f"{file}:five_classes", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and not checks["output shape"]["ok"] and checks["finite output"]["ok"]
    assert "[4, 5], want [4, 10]" in checks["output shape"]["detail"]
    code, out, _ = cli("models", "check", f"{file}:five_classes")
    assert code == 1 and "FAILED  output shape" in out and "3 of 6 checks FAILED" in out


@pytest.mark.parametrize("text, name, phrase", [
    (None, "Nope", "no 'Nope' in it (it defines Net, tiny, five_classes)"),
    (None, "WIDTH", "net.py:WIDTH is not an nn.Module subclass or a function returning "
                    "one (it is of type int)"),
    ("def f(:\n", "f", "net.py: SyntaxError: "),
    ("import not_a_package_anywhere\n", "f", "net.py: ModuleNotFoundError: No module named"),
    ("raise RuntimeError('boom')\nmore\n", "f", "net.py: RuntimeError: boom"),
    ("def f():\n    return 3\n", "f", "net.py:f returned an object of type int, not"),
    ("import torch\nnet = torch.nn.Linear(784, 10)\n", "net", "is an nn.Module instance"),
])
def test_a_model_that_cannot_be_built_is_one_line(cli, tmp_path, assert_one_line_error,
                                                   assert_nothing_stored, text, name, phrase):
    file = write_net(tmp_path, text if text is not None else NET)
    code, _, err = cli("models", "check", f"{file}:{name}")
    assert_one_line_error(code, err, phrase)
    assert str(file) in err
    code, _, err = cli("train", "--model", f"{file}:{name}", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, err, phrase)
    assert_nothing_stored(tmp_path / "runs")


def test_a_missing_file_is_one_line(cli, tmp_path, assert_one_line_error):
    code, _, err = cli("models", "check", tmp_path / "nowhere.py:Net")
    assert_one_line_error(code, err, f"{tmp_path / 'nowhere.py'}: no such model file")
    code, _, err = cli("train", "--model", "net.py")
    assert_one_line_error(code, err, "model 'net.py': say which model in the file, net.py:Name")
    code, _, err = cli("models", "check")
    assert_one_line_error(code, err, "models check needs a model")


SEEDED = """

def seeded(seed: int = -1) -> nn.Module:  # 10 outputs only when given the run's seed, 0
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10 + seed))
"""


def test_dropout_and_seed_reach_a_model_file(tmp_path):
    file = write_net(tmp_path, NET + SEEDED)
    net = build_model(resolve_model(TrainConfig(model=f"{file}:Net", dropout=0.3)))
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.3]
    seeded = build_model(resolve_model(TrainConfig(model=f"{file}:seeded", seed=0)))
    assert seeded[1].out_features == 10
    with pytest.raises(UserError, match="model 'net.py:tiny' has no dropout to set"):
        build_model(resolve_model(TrainConfig(model=f"{file}:tiny", dropout=0.3)))


def test_two_files_of_one_name_do_not_clash(tmp_path):
    wide = write_net(tmp_path / "a", NET.replace("width: int = 8", "width: int = 16"))
    narrow = write_net(tmp_path / "b")
    sizes = [count_params(build_model(resolve_model(TrainConfig(model=f"{f}:Net"))))
             for f in (wide, narrow)]
    assert sizes == [16 * 9 + 16 + 16 * 16 * 10 + 10, 1370]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed package's model: entry point `tiny_plugin` = lab_plugin:TinyNet, and a
    broken one, `broken_plugin`."""
    write_net(tmp_path / "site", NET.replace("class Net", "class TinyNet"), "lab_plugin.py")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    real = importlib.metadata.entry_points
    ours = [importlib.metadata.EntryPoint("tiny_plugin", "lab_plugin:TinyNet", GROUP),
            importlib.metadata.EntryPoint("broken_plugin", "lab_plugin_gone:Net", GROUP)]

    def entry_points(**kw):
        return ours if kw.get("group") == GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield
    sys.modules.pop("lab_plugin", None)


def test_an_installed_model_is_listed_and_trains(plugin, cli, data_root,
                                                 assert_one_line_error):
    code, out, _ = cli("models", "--json")
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert code == 0 and rows["tiny_plugin"]["params"] == 1370
    assert rows["tiny_plugin"]["source"] == "installed: lab_plugin:TinyNet"
    assert rows["compact_step3"]["params"] == 7432
    # a broken one is listed, saying why, and the others still are
    assert rows["broken_plugin"]["params"] is None
    assert "lab_plugin_gone:Net): ModuleNotFoundError" in rows["broken_plugin"]["source"]
    code, out, err = cli("train", "--model", "tiny_plugin", "--model-arg", "width=4", *SMALL,
                         "--epochs", 1, "--data-dir", data_root, "--no-progress", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["config"]["model"] == "tiny_plugin" and record["config"]["model_source"] == {}
    assert record["params"] == 690
    code, _, err = cli("train", "--model", "broken_plugin")
    assert_one_line_error(code, err, "model 'broken_plugin' (entry point lab_plugin_gone:Net): "
                          "ModuleNotFoundError")


STUDY = '''
name = "mine"
seeds = [0]

[base]
model = "net.py:Net"
model_kwargs = { width = 4 }
rotate = 0.0
translate = 0.0

[[blocks]]
name = "main"
'''


def test_a_study_finds_its_model_file_beside_it(cli, tmp_path, monkeypatch, data_root):
    file = write_net(tmp_path / "study")
    study = tmp_path / "study" / "mine.toml"
    study.write_text(STUDY)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not where the model file is
    args = ("study", "run", study, "--quick", "--data-dir", data_root, "--no-progress")
    code, out, err = cli(*args)
    assert code == 0, err
    assert "1 complete" in out
    [record] = Store().runs(study="mine:quick")
    assert record.config.model_source["path"] == str(file)
    assert "1 skipped" in cli(*args)[1]  # stored: resumed by its key
    file.write_text(file.read_text() + "# an edit\n")
    code, out, _ = cli("study", "show", study, "--quick")
    assert code == 0 and "0 of 1 runs stored" in out


def test_a_spawned_worker_builds_the_model_from_the_config(tmp_path, data_root):
    file = write_net(tmp_path)
    cfg = resolve_model(TrainConfig(model=f"{file}:Net", model_kwargs={"width": 4}, epochs=1,
                                    subset=200, test_subset=100, rotate=0, translate=0,
                                    threads=1))
    ctx = RunContext(data_dir=str(data_root))
    # spawn, as a study's local pool does: the worker imports the file itself
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        record = pool.submit(run_one, cfg, ctx, StudyLabel("spawned")).result()
    assert record.status == "complete", record.error
    assert record.params == 690 and record.weights is not None


def test_a_resolved_config_needs_its_file(tmp_path):
    file = write_net(tmp_path)
    cfg = resolve_model(TrainConfig(model=f"{file}:Net"))
    file.unlink()
    with pytest.raises(UserError, match=f"model 'net.py:Net' needs model file {file} .*missing"):
        build_model(cfg)
    with pytest.raises(UserError, match="holds a model file's path and sha256"):
        TrainConfig(model_source={"path": str(file)}).validate()

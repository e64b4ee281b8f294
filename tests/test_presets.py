"""Named recipes: every preset is a valid config of a zoo model; flags beside it win; a short
real run of each learns."""

import pytest

from mnist_lab.cli import build_parser
from mnist_lab.commands import config_from_args
from mnist_lab.config import TrainConfig
from mnist_lab.models import build_model, count_params
from mnist_lab.presets import PRESETS, list_presets, preset_settings


def _config(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("name", list_presets())
def test_a_preset_sets_its_fields_and_nothing_else(name):
    cfg = _config("--preset", name)
    settings = preset_settings(name)
    assert {k: getattr(cfg, k) for k in settings} == settings
    unset = TrainConfig(**{k: v for k, v in cfg.to_dict().items() if k not in settings})
    assert unset == TrainConfig(), "a preset changed a field it does not name"
    assert count_params(build_model(cfg.validate())) > 0


def test_the_8k_preset_is_under_8k_parameters():
    assert count_params(build_model(_config("--preset", "fast-99.4-8k"))) < 8000


def test_a_flag_beside_a_preset_overrides_it_even_at_the_default():
    cfg = _config("--preset", "fast-99.0", "--lr", "0.1", "--rotate", "7", "--epochs", "2")
    assert (cfg.lr, cfg.rotate, cfg.epochs) == (0.1, 7.0, 2)  # 0.1 is TrainConfig's default
    assert cfg.model == PRESETS["fast-99.0"].settings["model"]  # what was not given stays
    assert _config("--preset", "fast-99.4", "--model-arg", "c3=32").model_kwargs == {"c3": 32}


def test_no_preset_is_the_defaults():
    assert _config() == TrainConfig()


def test_train_help_lists_every_preset_with_its_settings(cli):
    code, out, _ = cli("train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for name in list_presets():
        assert f"{name}:" in flat
    assert "epochs=1" in flat and "model=fast_cnn" in flat


def test_an_unknown_preset_is_one_line(cli, assert_one_line_error):
    code, _, err = cli("train", "--preset", "fast-100")
    assert_one_line_error(code, err, "fast-100")


@pytest.mark.parametrize("name", list_presets())
def test_each_preset_learns_on_a_subset(name, train_json, data_root, tmp_path):
    """A preset's recipe on 6,000 images for one epoch: real learning, in seconds."""
    record = train_json("--preset", name, "--subset", "6000", "--seed", "1",
                        "--runs-dir", tmp_path, "--data-dir", data_root, "--no-progress")
    assert record["config"]["model"] == PRESETS[name].settings["model"]
    assert record["final"]["test_accuracy"] >= 0.90

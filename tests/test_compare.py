"""Statistics: the helpers against textbook values, then `mnist-lab compare` on real runs."""

import json
import re

import numpy as np
import pytest

from mnist_lab.compare import Side, _seeds_needed, against_figure, holm, on_test_set, over_seeds
from mnist_lab.config import TrainConfig
from mnist_lab.errors import UserError
from mnist_lab.metrics import Epoch, TestOutputs
from mnist_lab.record import RunRecord

# Welch's t-test, example 1 of its Wikipedia article: t = -2.46, p = 0.021.
WELCH_A = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
WELCH_B = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def _side(name: str, values: list[float], seeds: list[int] | None = None,
          outputs: np.ndarray | None = None) -> Side:
    seeds = seeds if seeds is not None else list(range(len(values)))
    runs = [RunRecord(f"{name}{s}", "k", "complete", TrainConfig(seed=s), "0",
                      history=[Epoch(1, test_accuracy=v)])
            for v, s in zip(values, seeds, strict=True)]
    return Side(name, runs, outputs)


def test_welch_against_the_textbook():
    c = over_seeds(_side("a", WELCH_A, list(range(15))),
                   _side("b", WELCH_B, list(range(100, 115))), "test_accuracy")
    assert c.test == "Welch's t" and c.p_value == pytest.approx(0.021378, abs=1e-6)
    assert c.difference == pytest.approx(np.mean(WELCH_B) - np.mean(WELCH_A))
    assert c.ci_low < c.difference < c.ci_high and c.ci_low > 0  # significant: CI excludes 0


def test_paired_when_the_seeds_pair_up():
    c = over_seeds(_side("a", [0.90, 0.91, 0.92]), _side("b", [0.91, 0.92, 0.935]),
                   "test_accuracy")
    assert c.test == "paired t"
    assert c.significant and "b beats a by 1.17 pp" in c.verdict()


def test_mcnemar_against_the_textbook():
    """b = 6, c = 16 discordant pairs: exact two-sided p = 0.0525 (binomial, n = 22)."""
    labels = np.zeros(161, dtype=int)
    right_a = np.array([1] * 59 + [1] * 6 + [0] * 16 + [0] * 80, dtype=bool)
    right_b = np.array([1] * 59 + [0] * 6 + [1] * 16 + [0] * 80, dtype=bool)
    def probs(right):  # class 0 (correct) or class 1
        out = np.zeros((161, 10), dtype=np.float32)
        out[np.arange(161), np.where(right, 0, 1)] = 1
        return out
    c = on_test_set(_side("a", [0.4], outputs=TestOutputs(probs(right_a), labels)),
                    _side("b", [0.47], outputs=TestOutputs(probs(right_b), labels)))
    assert c.test == "McNemar exact" and c.p_value == pytest.approx(0.052479, abs=1e-6)
    assert c.difference == pytest.approx(10 / 161) and not c.significant


def test_holm_on_a_known_list():
    sides = [_side("a", [0.5, 0.6])]
    fake = [over_seeds(sides[0], sides[0], "test_accuracy") for _ in range(4)]
    import dataclasses
    fake = [dataclasses.replace(c, p_value=p) for c, p in zip(fake, [0.01, 0.04, 0.03, 0.005],
                                                                  strict=True)]
    assert [c.p_holm for c in holm(fake)] == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_power_on_a_known_case():
    """Cohen: d = 0.8 needs 26 per group for 80% power at 5%; d = 0.5 needs 64 (over 50)."""
    assert _seeds_needed(0.8, paired=False) == 26
    assert _seeds_needed(0.5, paired=False) is None


def test_against_the_source_figure():
    c = against_figure(_side("ours", [0.9944, 0.9946, 0.9943]), 0.993, "test_accuracy",
                       "source")
    assert c.test == "one-sample t" and c.significant and c.difference > 0


def test_one_run_a_side_is_no_t_test():
    with pytest.raises(UserError, match="needs 2 runs a side"):
        over_seeds(_side("a", [0.9]), _side("b", [0.8]), "test_accuracy")


# ---------------------------------------------------------------- end to end, real runs

STUDY = """
name = "same-or-not"
seeds = [0, 1, 2]   # with 2, paired t has 1 degree of freedom: 8 pp is not established
[base]
epochs = 1
subset = 10000        # one epoch of batch 32: the CNN at ~97%, softmax regression at ~88%
batch_size = 32
test_subset = 1000
rotate = 0.0
translate = 0.0
[[blocks]]
name = "b"
baseline = "softmax"
reference = { cnn = { test_accuracy = 0.99 } }
[[blocks.variants]]
name = "cnn"
[[blocks.variants]]
name = "cnn-again"      # the same training under another name (a target it never reaches)
stop_at_accuracy = 1.0
[[blocks.variants]]
name = "softmax"
model = "softmax"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root, train_json) -> tuple:
    folder = tmp_path_factory.mktemp("compare")
    (folder / "s.toml").write_text(STUDY)
    from mnist_lab.config import RunContext
    from mnist_lab.runner import run_study
    from mnist_lab.store import Store
    from mnist_lab.study import load_study
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        run_study(load_study("s.toml"), Store(folder / "runs"),
                  RunContext(data_dir=str(data_root)))
    return folder, Store(folder / "runs").runs()


def _compare(cli, folder, *args):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return cli("compare", *args, "--runs-dir", folder / "runs")


def test_the_same_config_under_two_names_is_not_a_difference(runs, cli):
    code, out, err = _compare(cli, runs[0], "s.toml/cnn", "s.toml/cnn-again")
    assert code == 0, err
    assert "not established at n = 3" in out and "paired t" in out


def test_a_clearly_worse_model_is_found_both_ways(runs, cli):
    code, out, err = _compare(cli, runs[0], "s.toml", "--baseline", "softmax", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["holm"] is True
    by_b = {c["b"]: c for c in result["comparisons"]}
    assert by_b["s.toml/cnn"]["significant"] and by_b["s.toml/cnn"]["difference"] > 0
    assert "s.toml/cnn beats s.toml/softmax" in by_b["s.toml/cnn"]["verdict"]
    softmax, cnn = (next(r.id for r in runs[1] if r.label.variant == v and r.config.seed == 0)
                    for v in ("softmax", "cnn"))
    code, out, err = _compare(cli, runs[0], softmax, cnn)  # one run a side: McNemar
    assert code == 0, err
    assert "McNemar exact" in out and f"{cnn} beats {softmax}" in out


@pytest.mark.parametrize("args, phrase", [
    (("nosuchid", "alsonot"), "no run matches 'nosuchid'"),
    (("s.toml/nope", "s.toml/cnn"), "has no variant 'nope'; it has: cnn, cnn-again, softmax"),
    (("s.toml/cnn",), "needs two sides or more"),
    (("s.toml/cnn", "s.toml/softmax", "--metric", "acc"), "unknown metric 'acc'"),
])
def test_bad_input(runs, cli, assert_one_line_error, args, phrase):
    code, out, err = _compare(cli, runs[0], *args)
    assert_one_line_error(code, err, phrase)
    assert out == ""


def test_reports_carry_the_verdicts(runs, tmp_path):
    from mnist_lab.report import write_report
    from mnist_lab.study import load_study
    study = load_study(runs[0] / "s.toml")
    write_report(study, runs[1], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| vs softmax (pp) [95% CI] | p (Holm) |" in md
    # computed, Holm-corrected within the block, the interval that of the margin stated
    margin = re.search(r"cnn beats softmax by ([0-9.]+) pp on test_accuracy \(95% CI "
                       r"\+([0-9.]+) to \+([0-9.]+) pp", md)
    assert margin and float(margin[2]) < float(margin[1]) < float(margin[3])
    assert "the source beats cnn" in md  # 97% after one epoch is below the 99% given


def test_runs_on_other_images_are_not_compared():
    one = TestOutputs(np.eye(10, dtype=np.float16), np.arange(10, dtype=np.uint8))
    other = TestOutputs(one.probabilities, np.zeros(10, dtype=np.uint8))
    with pytest.raises(UserError, match="tested on different images"):
        on_test_set(_side("a", [0.5], outputs=one), _side("b", [0.5], outputs=other))


def test_runs_stored_without_outputs_say_so(runs, cli, assert_one_line_error):
    """A store written before outputs were kept: McNemar's test says what it lacks."""
    import sqlite3
    db = sqlite3.connect(runs[0] / "runs" / "runs.db")
    with db:
        db.execute("DELETE FROM outputs")
    a, b = runs[1][0].id, runs[1][1].id
    code, _, err = _compare(cli, runs[0], a, b)
    assert_one_line_error(code, err, "no stored test outputs")


def test_seeds_that_agree_exactly_cannot_be_tested():
    with pytest.raises(UserError, match="all 3 seeds give 0.1135: no spread"):
        against_figure(_side("collapsed", [0.1135] * 3), 0.1028, "test_accuracy", "source")


def test_a_grid_point_baseline_pairs_each_variant_with_its_own():
    from mnist_lab.report import baseline_of
    variants = [f"subset={n},weight_decay={w}" for n in (1000, 5000) for w in (0.0, 0.001)]
    assert baseline_of("subset=5000,weight_decay=0.001", "weight_decay=0.0", variants) == \
        "subset=5000,weight_decay=0.0"
    assert baseline_of("subset=1000,weight_decay=0.0", "weight_decay=0.0", variants) == \
        "subset=1000,weight_decay=0.0"  # itself: not compared
    assert baseline_of("x", "subset=1000,weight_decay=0.0", variants + ["x"]) == \
        "subset=1000,weight_decay=0.0"


def test_a_baseline_that_is_no_variant_is_refused(tmp_path):
    from mnist_lab.study import load_study
    (tmp_path / "s.toml").write_text('name = "s"\n[[blocks]]\nname = "b"\n'
                                     'baseline = "lr=9"\ngrid = { lr = [0.1, 0.2] }\n')
    with pytest.raises(UserError, match="baseline 'lr=9' is neither one of its variants"):
        load_study(tmp_path / "s.toml")


def test_compare_baseline_by_name_and_an_unknown_one(runs, cli):
    code, out, err = _compare(cli, runs[0], "s.toml", "--baseline", "softmax")
    assert code == 0, err
    code, _, err = _compare(cli, runs[0], "s.toml", "--baseline", "nosuch")
    assert code == 2 and "no block has a variant 'nosuch'" in err

"""Ensembles: the two ways of combining on known cases, then from a study's stored runs."""

import numpy as np
import pytest

from mnist_lab.config import TrainConfig
from mnist_lab.ensemble import averaged_predictions, combine, majority_predictions
from mnist_lab.errors import UserError
from mnist_lab.metrics import Epoch, TestOutputs, Timing
from mnist_lab.record import RunRecord


def _onehot(classes: list[int], p: float = 0.9) -> np.ndarray:
    """Probabilities that put p on each image's class and the rest evenly on the others."""
    out = np.full((len(classes), 10), (1 - p) / 9, dtype=np.float16)
    out[np.arange(len(classes)), classes] = p
    return out


def test_majority_vote_counts_votes_not_confidence():
    # Two members say 1 at 0.4; one says 2 at 1.0: averaging picks 2, the vote picks 1.
    weak = np.full((1, 10), 0.6 / 9, dtype=np.float32)
    weak[0, 1] = 0.4
    sure = np.zeros((1, 10), dtype=np.float32)
    sure[0, 2] = 1.0
    probs = np.stack([weak, weak, sure])
    assert majority_predictions(probs).tolist() == [1]
    assert averaged_predictions(probs).tolist() == [2]


def test_a_tied_vote_goes_to_the_larger_summed_probability():
    probs = np.stack([_onehot([3], 0.6), _onehot([5], 0.95)])
    assert majority_predictions(probs).tolist() == [5]
    assert majority_predictions(probs[::-1]).tolist() == [5]  # not the first member's


@pytest.mark.parametrize("combine", [averaged_predictions, majority_predictions])
def test_one_member_is_itself(combine):
    classes = [0, 7, 7, 2, 9]
    assert combine(_onehot(classes)[None]).tolist() == classes


def test_three_members_fix_each_others_single_mistakes():
    truth = np.arange(10) % 10
    members = []
    for wrong in (0, 1, 2):  # each member misses a different image
        guess = truth.copy()
        guess[wrong] = (guess[wrong] + 1) % 10
        members.append(_onehot(guess.tolist()))
    probs = np.stack(members)
    assert (majority_predictions(probs) == truth).all()
    assert (averaged_predictions(probs) == truth).all()


def test_combine_reports_both_ways_and_tests_against_the_best_run():
    truth = np.arange(200) % 10
    outputs, runs = [], []
    for seed, wrong in enumerate((range(0, 20), range(20, 40), range(40, 60))):
        guess = truth.copy()
        guess[list(wrong)] = (guess[list(wrong)] + 1) % 10  # 10% wrong, different images
        outputs.append(TestOutputs(_onehot(guess.tolist()), truth.astype(np.uint8)))
        runs.append(RunRecord(f"r{seed}", "k", "complete", TrainConfig(model="softmax",
                    seed=seed), "0", params=7850, history=[Epoch(1, test_accuracy=0.9)],
                    timing=Timing(wall_seconds=30.0, packed=3 if seed < 2 else None)))
    e = combine("three", ["v"], runs, outputs)
    assert (e.runs, e.params, e.member_accuracy, e.best_member_accuracy) == (3, 23550, 0.9, 0.9)
    assert e.wall_seconds == 50.0  # seeds 0 and 1 shared a pack of 3 (20 s each), seed 2 alone
    assert e.averaged == e.majority == 1.0  # every mistake outvoted
    assert e.vs_best.test == "McNemar exact" and e.vs_best.significant  # 20 discordant, all won
    assert "three beats its best run (softmax, seed 0) by 10.00 pp" in e.vs_best.verdict()


def test_runs_tested_on_other_images_are_not_combined():
    a = TestOutputs(_onehot([1, 2]), np.array([1, 2], dtype=np.uint8))
    b = TestOutputs(_onehot([1, 2]), np.array([1, 3], dtype=np.uint8))
    run = RunRecord("r", "k", "complete", TrainConfig(), "0", params=1)
    with pytest.raises(UserError, match="ensemble 'x': its runs were tested on different images"):
        combine("x", ["v"], [run, run], [a, b])

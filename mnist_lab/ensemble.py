"""Ensembles of stored runs: their test outputs combined, nothing trained or re-evaluated.

A study block with `ensembles` names, for each ensemble, the variants whose stored complete
runs (every seed) are its members: `VARIANT` of the same study, or `STUDY/VARIANT` of another.
Two ways to combine are reported, as the records literature does: the members' averaged class
probabilities, and a majority vote of their predictions (ties go to the tied class with the
larger summed probability). Members are fixed in the study file before anything is seen, so no
test score chooses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compare import Comparison, Side, on_test_set
from .errors import UserError
from .metrics import TestOutputs
from .record import RunRecord
from .search import study_runs
from .store import Store
from .study import Study, find_study, load_study


@dataclass(frozen=True)
class EnsembleResult:
    """One ensemble's figures on the test set."""

    name: str
    members: list[str]  # the variants, as the study file names them
    runs: int  # stored runs combined (every seed of every member)
    params: int  # parameters of all the runs together
    mflops: float  # forward MFLOPs per image of all the runs together
    wall_seconds: float  # training time of all the runs together (a pack's counted once)
    member_accuracy: float  # the runs' mean test accuracy, alone
    best_member_accuracy: float  # the best run's, alone
    averaged: float  # test accuracy of the averaged probabilities
    majority: float  # test accuracy of the majority vote
    # McNemar's test of the averaged ensemble against its best run (None for a single run);
    # picking that run on test favours it, so a win here is the conservative kind
    vs_best: Comparison | None = None


def averaged_predictions(probabilities: np.ndarray) -> np.ndarray:
    """Classes of the mean probability over members; `probabilities` is [members, N, C]."""
    return probabilities.astype(np.float32).mean(axis=0).argmax(axis=1)


def majority_predictions(probabilities: np.ndarray) -> np.ndarray:
    """Each image's most voted class; a tie goes to the tied class of larger summed
    probability (the sum is below the member count, so it never outweighs one vote)."""
    k, _, classes = probabilities.shape
    votes = np.eye(classes, dtype=np.float32)[probabilities.argmax(axis=2)].sum(axis=0)
    return (votes * (k + 1) + probabilities.astype(np.float32).sum(axis=0)).argmax(axis=1)


def variant_runs(store: Store, study: Study, variant: str, quick: bool) -> list[RunRecord]:
    """The stored complete runs of one variant of a study, in the file's seed order."""
    stored_runs = store.runs(study=study.store_name(quick))
    runs_of = study_runs(study, stored_runs, quick)
    keys = [r.config.key() for r in runs_of if r.variant == variant]
    if not keys:
        known = ", ".join(dict.fromkeys(r.variant for r in runs_of))
        raise UserError(f"study {study.name} has no variant {variant!r}; it has: {known}")
    stored = {r.key: r for r in stored_runs if r.status == "complete"}
    return [stored[k] for k in dict.fromkeys(keys) if k in stored]


def _member_runs(store: Store, study: Study, member: str, quick: bool) -> list[RunRecord]:
    """A member's runs: a variant of this study, or STUDY/VARIANT of another."""
    if "/" in member:
        other, variant = member.split("/", 1)
        study = load_study(find_study(other))
        member = variant
    runs = variant_runs(store, study, member, quick)
    if not runs:
        raise UserError(f"ensemble member {member!r} of study {study.name}: no stored complete "
                        f"runs (run `mnist-lab study run {study.name}` first)")
    return runs


def combine(name: str, members: list[str], runs: list[RunRecord],
            outputs: list[TestOutputs]) -> EnsembleResult:
    """An ensemble's result from its runs and their stored test outputs."""
    labels = outputs[0].labels
    if any(o.labels.shape != labels.shape or (o.labels != labels).any() for o in outputs):
        raise UserError(f"ensemble {name!r}: its runs were tested on different images")
    probs = np.stack([o.probabilities for o in outputs])
    alone = [float((p.argmax(axis=1) == labels).mean()) for p in probs]
    best = int(np.argmax(alone))
    mean = TestOutputs(probs.astype(np.float32).mean(axis=0), labels)
    vs_best = None if len(runs) == 1 else on_test_set(
        Side(f"its best run ({runs[best].model}, seed {runs[best].config.seed})", [runs[best]],
             outputs[best]),
        Side(name, runs, mean))
    return EnsembleResult(
        name, members, len(runs), sum(int(r.metric("params")) for r in runs),
        sum(r.metric("mflops") or 0.0 for r in runs),
        # a packed run's wall time is its whole pack's: each member counts its share
        sum((r.metric("wall_seconds") or 0.0) / (r.timing.packed or 1) for r in runs),
        float(np.mean(alone)), max(alone),
        float((averaged_predictions(probs) == labels).mean()),
        float((majority_predictions(probs) == labels).mean()), vs_best)


def evaluate_ensemble(store: Store, study: Study, spec: dict,
                      quick: bool = False) -> EnsembleResult:
    """Combine the stored test outputs of every run of the ensemble's members."""
    runs = [r for m in spec["members"] for r in _member_runs(store, study, m, quick)]
    outputs = [store.outputs(r.id) for r in runs]
    if missing := [r.id for r, o in zip(runs, outputs, strict=True) if o is None]:
        raise UserError(f"ensemble {spec['name']!r}: run {missing[0]} has no stored test "
                        "outputs (it was stored before outputs were kept; train it again)")
    return combine(spec["name"], spec["members"], runs, outputs)


def study_ensembles(store: Store, study: Study, quick: bool = False) -> dict:
    """{(block, ensemble name): its result, or why it cannot be formed} for every ensemble."""
    out: dict[tuple[str, str], EnsembleResult | str] = {}
    for block in study.blocks:
        for spec in block.get("ensembles", []):
            try:
                out[(block["name"], spec["name"])] = evaluate_ensemble(store, study, spec, quick)
            except UserError as e:
                out[(block["name"], spec["name"])] = str(e)
    return out

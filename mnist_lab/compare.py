"""Is the difference real? Comparisons of runs and variants from what the store holds.

Our code only assembles the inputs; every distribution comes from scipy.stats or statsmodels:
- over seeds: Welch's t-test on the per-run metric, or a paired t-test when both sides have the
  same seeds (pairs by seed);
- on the shared test set: McNemar's exact test on the images the two sides classify
  differently (one run each, or each side's seed-averaged probabilities), which tells whether
  two classifiers differ on these images even with one seed each;
- against the source document's single figure: a one-sample t-test of our seeds.
Several comparisons in one table are Holm-corrected. For a difference that is not
significant, the seeds per side that would detect it with 80% power at the observed spread.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from .errors import UserError
from .metrics import METRICS, TestOutputs
from .record import RunRecord

ALPHA = 0.05  # two-sided, for every test and every confidence interval (95%)
POWER = 0.8
MAX_SEEDS = 50  # beyond this, "not detectable with fewer than 50 seeds"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a run, or the stored seeds of a variant."""

    name: str
    runs: list[RunRecord]
    outputs: TestOutputs | None = None  # seed-averaged test probabilities, if all were stored

    def values(self, metric: str) -> list[float]:
        """The metric of each run, in seed order."""
        return [r.metric(metric) for r in self.runs]

    def seeds(self) -> list[int]:
        """Each run's seed."""
        return [r.config.seed for r in self.runs]


@dataclass(frozen=True)
class Comparison:
    """b against a: the difference of means (b - a), its 95% CI, the test, the verdict."""

    a: str
    b: str
    metric: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    std_a: float | None  # sample std over seeds; None for one run
    std_b: float | None
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # Welch's t | paired t | McNemar exact | one-sample t
    p_holm: float | None = None  # adjusted within its table, when it has several rows
    seeds_needed: int | None = None  # t-tests: per side for 80% power; None: over MAX_SEEDS

    @property
    def significant(self) -> bool:
        """At the 5% level, after Holm's correction where there is one."""
        return (self.p_holm if self.p_holm is not None else self.p_value) < ALPHA

    def verdict(self) -> str:
        """One line in words, generated from the numbers."""
        pp = METRICS[self.metric].kind == "fraction"
        unit, scale = (" pp", 100.0) if pp else ("", 1.0)
        d = 2 if pp else 4  # decimals: 0.15 pp, a loss 0.0068
        p = self.p_holm if self.p_holm is not None else self.p_value
        holm = ", Holm" if self.p_holm is not None else ""
        sides = (f"{self.n_b} vs {self.n_a} seeds" if self.test != "one-sample t"
                 else f"{self.n_b} seeds")

        def detail(lo: float, hi: float) -> str:
            ci = f"95% CI {scale * lo:+.{d}f} to {scale * hi:+.{d}f}{unit}"
            return f"({ci}, p = {_p(p)}{holm}, {self.test}, {sides})"
        if self.significant:
            better = self.difference > 0 if METRICS[self.metric].higher_is_better else \
                self.difference < 0
            winner, loser = (self.b, self.a) if better else (self.a, self.b)
            # the interval of the margin the sentence states: how much the winner is better
            s = 1 if (winner == self.b) == METRICS[self.metric].higher_is_better else -1
            lo, hi = sorted((s * self.ci_low, s * self.ci_high))
            return (f"{winner} beats {loser} by {scale * abs(self.difference):.{d}f}{unit} "
                    f"on {self.metric} {detail(lo, hi)}")
        need = (f"; about {self.seeds_needed} seeds per side would detect it"
                if self.seeds_needed else
                f"; not detectable with fewer than {MAX_SEEDS} seeds"
                if self.test in ("Welch's t", "paired t") else "")
        n = self.n_b if self.test == "one-sample t" else min(self.n_a, self.n_b)
        return (f"{self.b} vs {self.a}: {scale * self.difference:+.{d}f}{unit} on {self.metric}, "
                f"not established at n = {n} {detail(self.ci_low, self.ci_high)}{need}")


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _sd(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def _seeds_needed(d: float, paired: bool) -> int | None:
    """Seeds per side (pairs, if paired) for 80% power at standardised effect size d."""
    if not math.isfinite(d) or d <= 0:
        return None
    solver = TTestPower() if paired else TTestIndPower()
    if float(solver.power(d, 2, ALPHA)) >= POWER:  # the solver finds no n below 2
        return 2
    with warnings.catch_warnings():  # no root within its bracket: far beyond MAX_SEEDS
        warnings.simplefilter("ignore")
        n = float(np.squeeze(solver.solve_power(effect_size=d, alpha=ALPHA, power=POWER)))
    return math.ceil(n) if math.isfinite(n) and n <= MAX_SEEDS else None


def _spread(side: Side, xs: list[float]) -> None:
    """A t-test needs seeds that differ: identical ones (a model collapsed to one class, say)
    leave the spread at zero and the test without meaning."""
    if len(set(xs)) == 1:
        raise UserError(f"{side.name}: all {len(xs)} seeds give {xs[0]:.6g}: no spread over "
                        "seeds to test with")


def over_seeds(a: Side, b: Side, metric: str) -> Comparison:
    """Welch's t-test of the per-run metric, or a paired one when the seeds pair up."""
    xa, xb = a.values(metric), b.values(metric)
    if min(len(xa), len(xb)) < 2:
        raise UserError(f"a t-test over seeds needs 2 runs a side ({a.name}: {len(xa)}, "
                        f"{b.name}: {len(xb)}); use McNemar's test on the test set")
    if len(set(xa)) == 1 and len(set(xb)) == 1:
        _spread(a, xa)
    paired = sorted(a.seeds()) == sorted(b.seeds()) and len(set(a.seeds())) == len(xa)
    if paired:
        ya = [x for _, x in sorted(zip(a.seeds(), xa, strict=True))]
        yb = [x for _, x in sorted(zip(b.seeds(), xb, strict=True))]
        result, test = stats.ttest_rel(yb, ya), "paired t"
        diffs = np.subtract(yb, ya)
        d = abs(diffs.mean()) / diffs.std(ddof=1) if diffs.std(ddof=1) > 0 else math.inf
    else:
        result, test = stats.ttest_ind(xb, xa, equal_var=False), "Welch's t"
        pooled = math.sqrt((np.var(xa, ddof=1) + np.var(xb, ddof=1)) / 2)
        d = abs(np.mean(xb) - np.mean(xa)) / pooled if pooled > 0 else math.inf
    ci = result.confidence_interval(1 - ALPHA)
    p = float(result.pvalue) if math.isfinite(result.pvalue) else 1.0
    return Comparison(a.name, b.name, metric, len(xa), len(xb), float(np.mean(xa)),
                      float(np.mean(xb)), _sd(xa), _sd(xb), float(np.mean(xb) - np.mean(xa)),
                      float(ci.low), float(ci.high), p, test,
                      seeds_needed=_seeds_needed(d, paired))


def on_test_set(a: Side, b: Side) -> Comparison:
    """McNemar's exact test on the test images the two sides classify differently."""
    if a.outputs is None or b.outputs is None:
        missing = a.name if a.outputs is None else b.name
        raise UserError(f"{missing}: no stored test outputs (runs stored before mnist-lab "
                        "kept them); McNemar's test needs them: re-run it")
    labels = a.outputs.labels
    if not np.array_equal(labels, b.outputs.labels):
        raise UserError(f"{a.name} and {b.name} were tested on different images")
    right_a = a.outputs.probabilities.argmax(1) == labels
    right_b = b.outputs.probabilities.argmax(1) == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    table = [[int((right_a & right_b).sum()), only_a],
             [only_b, int((~right_a & ~right_b).sum())]]
    p = float(mcnemar(table, exact=True).pvalue)
    n, diff = len(labels), (only_b - only_a) / len(labels)
    # Wald interval of a paired difference of proportions (the normal quantile from scipy)
    half = stats.norm.ppf(1 - ALPHA / 2) * math.sqrt(only_a + only_b - n * diff ** 2) / n
    return Comparison(a.name, b.name, "test_accuracy", len(a.runs), len(b.runs),
                      float(right_a.mean()), float(right_b.mean()), None, None, diff,
                      diff - half, diff + half, p, "McNemar exact")


def against_figure(side: Side, figure: float, metric: str, source: str) -> Comparison:
    """A one-sample t-test of our seeds against a single published figure."""
    xs = side.values(metric)
    if len(xs) < 2:
        raise UserError(f"{side.name}: a one-sample t-test needs 2 runs, got {len(xs)}")
    _spread(side, xs)
    with warnings.catch_warnings():  # nearly equal seeds: scipy warns, the CI shows it
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_1samp(xs, figure)
    ci = result.confidence_interval(1 - ALPHA)
    p = float(result.pvalue) if math.isfinite(result.pvalue) else 1.0
    return Comparison(source, side.name, metric, 1, len(xs), figure, float(np.mean(xs)), None,
                      _sd(xs), float(np.mean(xs) - figure), float(ci.low - figure),
                      float(ci.high - figure), p, "one-sample t")


def holm(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with Holm-adjusted p-values (unchanged when there is only one)."""
    if len(comparisons) < 2:
        return comparisons
    adjusted = multipletests([c.p_value for c in comparisons], alpha=ALPHA, method="holm")[1]
    return [replace(c, p_holm=float(p)) for c, p in zip(comparisons, adjusted, strict=True)]



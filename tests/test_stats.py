"""Ranking statistics against scipy (an independent implementation) on random data with ties."""

from __future__ import annotations

import random

import pytest

from latprof import stats

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(5))
def test_kendall_and_spearman_match_scipy(seed):
    rng = random.Random(seed)
    n = rng.randint(3, 40)
    x = [rng.choice(range(10)) + rng.random() * (seed % 2) for _ in range(n)]  # ties when seed even
    y = [v + rng.gauss(0, 3) for v in x]
    assert stats.kendall_tau(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic)
    assert stats.spearman_rho(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)


def test_error_summary_signs_and_shares():
    s = stats.error_summary([110.0, 95.0, 300.0], [100.0, 99.0, 200.0])
    assert s["worst_error_pct"] == pytest.approx(50.0) and s["worst_index"] == 2
    assert s["median_abs_error_pct"] == pytest.approx(10.0)
    assert s["within_5pct"] == pytest.approx(1 / 3) and s["within_10pct"] == pytest.approx(2 / 3)
    assert s["kendall_tau"] == pytest.approx(1.0)


def test_reversed_ranking_is_minus_one():
    assert stats.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert stats.spearman_rho([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_discordant_pairs_and_their_widest_gap():
    est = [10.0, 20.0, 30.0, 40.0]
    meas = [10.0, 21.0, 20.0, 40.0]  # models 1 and 2 swapped; measured 5% apart
    s = stats.error_summary(est, meas)
    assert stats.discordant_pairs(est, meas) == [(1, 2)]
    assert s["discordant_pairs"] == 1 and s["pairs"] == 6
    assert s["max_discordant_gap_pct"] == pytest.approx(5.0)

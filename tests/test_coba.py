"CoBa against hand-computed updates, the baselines' interface and the task scheduler."
import math
import numpy as np
import pytest
import torch

from cad_nb.coba import (CoBa, DWA, EqualWeights, UncertaintyWeighting, TaskScheduler, make_weighting, ols_slope,
                         relative_convergence, absolute_convergence, divergence_factor, combine_scores, weighted_sum)

e = math.exp
def softmax(z): z = np.asarray(z, float); x = np.exp(z - z.max()); return x / x.sum()


def test_slope_matches_numpy_polyfit():
    y = np.random.default_rng(0).normal(size=(3, 9))
    np.testing.assert_allclose(ols_slope(y), [np.polyfit(np.arange(9), r, 1)[0] for r in y])
    assert ols_slope([[1.0]]).tolist() == [0.0]


def test_scores_by_hand():
    np.testing.assert_allclose(relative_convergence([-0.5, 0.0]), [e(-2) / (e(-2) + 1), 1 / (e(-2) + 1)])
    np.testing.assert_allclose(relative_convergence([0.0, 0.0]), [0.5, 0.5])
    np.testing.assert_allclose(absolute_convergence([[-0.5, -0.375], [0.0, 0.25]]), softmax([6 / 7, -2]))
    np.testing.assert_allclose(absolute_convergence(np.zeros((2, 3))), [0.5, 0.5])
    assert divergence_factor([0.0, 0.0]) == 1.0
    np.testing.assert_allclose(divergence_factor([0.0, 0.25], tau=5), 2 * e(-10) / (1 + e(-10)))
    assert divergence_factor([-0.1, -0.3]) == 1.0 and divergence_factor([-0.1, -0.3], clamp=False) > 1


def test_floor():
    w = combine_scores([1, 0, 0, 0], [0, 0, 0, 0], 1.0)
    raw = np.array([e(4), 1, 1, 1]) / (e(4) + 3)
    np.testing.assert_allclose(w, 0.9 * raw + 0.025)
    assert w.min() >= 0.025 and abs(w.sum() - 1) < 1e-12
    np.testing.assert_allclose(combine_scores([0.5, 0.5], [0.5, 0.5], 0.3), [0.5, 0.5])   # no floor when not needed


def test_coba_sequence_by_hand():
    cb = CoBa(2, warmup_steps=2, history_length=3, tau=5.0)
    np.testing.assert_allclose(cb.update([2.0, 4.0]), [0.5, 0.5])
    np.testing.assert_allclose(cb.update([1.0, 4.0]), softmax(2 * np.array([e(-2), 1]) / (e(-2) + 1)))
    w = cb.update([0.5, 6.0])
    df = 2 * e(-10) / (1 + e(-10))
    np.testing.assert_allclose(w, softmax(2 * (df * softmax([-1.2, 0.8]) + (1 - df) * softmax([6 / 7, -2]))))
    assert cb.B == [0.0, 0.25] and len(cb.A) == 2


def test_coba_initial_losses_and_history_window():
    cb = CoBa(2, warmup_steps=1, history_length=2, initial_losses=[2.0, 2.0])
    cb.update([1.0, 2.0])                     # l = (0.5, 1): one point -> slopes 0 -> uniform
    np.testing.assert_allclose(cb.weights, [0.5, 0.5])
    cb.update([0.5, 2.0]); cb.update([0.25, 2.0])
    assert len(cb.losses) == 2                # only the last N normalised losses are kept
    np.testing.assert_allclose(cb.last["alpha"], [-0.125, 0.0])   # (0.125 - 0.25) over the last 2 points


def test_coba_bad_input():
    with pytest.raises(ValueError, match="must hold 3 losses"): CoBa(3).update([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"): CoBa(2).update([1.0, float("inf")])
    with pytest.raises(ValueError, match="L0 must be > 0"): CoBa(2).update([0.0, 1.0])


def test_weighted_sum_only_present_tasks():
    L = {0: torch.tensor(1.0), 2: torch.tensor(3.0)}
    assert float(weighted_sum(L, [0.25, 0.5, 0.25])) == pytest.approx(2.0)
    assert float(weighted_sum({1: torch.tensor(5.0)}, [0.1, 0.7, 0.2])) == pytest.approx(5.0)


def test_baselines_common_interface():
    for name in ("static", "coba", "dwa", "uw"):
        w = make_weighting(name, 3)
        assert hasattr(w, "signal") and len(w.weights) == 3 and abs(sum(w.weights) - 1) < 1e-6
        assert torch.isfinite(w.loss({0: torch.tensor(1.0), 1: torch.tensor(2.0)}))
    d = DWA(2, T=2.0); d.update([1.0, 1.0]); np.testing.assert_allclose(d.update([0.5, 1.0]), softmax([0.25, 0.5]))
    uw = UncertaintyWeighting(2)
    with torch.no_grad(): uw.log_vars[0] = math.log(2.0)
    assert float(uw.loss({0: torch.tensor(4.0), 1: torch.tensor(1.0)})) == pytest.approx(2.0 + math.log(2.0) + 1.0)
    with pytest.raises(ValueError, match="unknown weighting"): make_weighting("famo", 2)


def test_scheduler_policies():
    assert [TaskScheduler(3, "round_robin", tasks_per_step=1).sample(None) for _ in range(1)] == [[0]]
    s = TaskScheduler(3, "round_robin", tasks_per_step=1); assert [s.sample(None)[0] for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    np.testing.assert_allclose(TaskScheduler(2, "proportional", sizes=[300, 100]).probabilities(), [0.75, 0.25])
    np.testing.assert_allclose(TaskScheduler(2, "proportional", sizes=[400, 100], temperature=2).probabilities(), [2 / 3, 1 / 3])
    a = TaskScheduler(3, "adaptive", tasks_per_step=2, temperature=0.5)
    np.testing.assert_allclose(a.probabilities([0.5, 0.25, 0.25]), np.array([0.25, 0.0625, 0.0625]) / 0.375)
    draws = [a.sample(np.random.default_rng(i), [0.5, 0.25, 0.25]) for i in range(50)]
    assert all(len(d) == 2 and len(set(d)) == 2 for d in draws)
    with pytest.raises(ValueError, match="tasks_per_step"): TaskScheduler(3, tasks_per_step=4)

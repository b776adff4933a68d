"""The cost models' fit: non-negative relative least squares, robust to a disturbed timing,
the prior kept where the data says nothing."""
import numpy as np

from autocompress.cost_models.fit import bootstrap, cross_validated_errors, fit_relative

NAMES = ("flops", "bytes", "nodes", "unused")
TRUE = np.array([2e-9, 5e-10, 1e-5, 0.0])


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(1e6, 1e8, n), rng.uniform(1e5, 1e7, n),
                         rng.integers(5, 200, n), np.zeros(n)])
    return x, x @ TRUE


def test_noiseless_samples_give_back_the_weights_and_zero_cross_validated_error():
    x, y = _data()
    prior = {"flops": 1e-9, "bytes": 1e-9, "nodes": 1e-5, "unused": 7e-3}
    fit = fit_relative(x, y, NAMES, prior, shrink=1e-9)
    np.testing.assert_allclose(fit.weights[:3], TRUE[:3], rtol=1e-3)
    assert fit.weights[3] == 7e-3          # a feature the samples never exercise keeps its prior
    assert np.max(cross_validated_errors(x, y, NAMES, prior)) < 0.01
    members = bootstrap(x, y, NAMES, prior, members=4)
    spread = [m.predict(dict(zip(NAMES, x[0]))) for m in members]
    assert np.ptp(spread) / np.mean(spread) < 0.01


def test_one_disturbed_timing_does_not_drag_the_fit():
    x, y = _data()
    slow = y.copy()
    slow[0] *= 4                              # another process ran during this measurement
    prior = dict.fromkeys(NAMES, 0.0)
    fit = fit_relative(x, slow, NAMES, prior)
    predicted = x @ np.array(fit.weights)
    assert np.median(np.abs(predicted[1:] - y[1:]) / y[1:]) < 0.05
    assert all(w >= 0 for w in fit.weights)

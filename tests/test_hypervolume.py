"""Normalised hypervolume: hand-computable points, a cumulative history."""
import pytest

from autocompress.search import hypervolume


def test_hypervolume_of_hand_computable_points():
    scale = hypervolume.Scale(quality=0.8, latency_s=2e-3, size_bytes=1000)
    # relative (1.0, 0.5, 0.5) against reference (0.5, 10, 1): 0.5 * 9.5 * 0.5
    assert hypervolume.hypervolume([(0.8, 1e-3, 500)], scale) == pytest.approx(2.375)
    # a second point adds the box (0.75-0.5) x (10-0.25) x (1-0.25) minus the overlap
    two = hypervolume.hypervolume([(0.8, 1e-3, 500), (0.6, 0.5e-3, 250)], scale)
    overlap = (0.75 - 0.5) * (10 - 0.5) * (1 - 0.5)
    assert two == pytest.approx(2.375 + 0.25 * 9.75 * 0.75 - overlap)
    # outside the reference box (bigger than the original): contributes nothing
    assert hypervolume.hypervolume([(0.8, 1e-3, 1500)], scale) == 0.0


def test_hypervolume_history_is_cumulative():
    scale = hypervolume.Scale(1.0, 1.0, 1.0)
    points = [(1.0, 1.0, 0.5), None, (0.4, 0.1, 0.1), (1.0, 0.5, 0.5), (0.9, 0.9, 0.9)]
    history = hypervolume.history(points, scale)
    assert history == [pytest.approx(v) for v in (2.25, 2.25, 2.25, 2.375, 2.375)]
    assert history[-1] == pytest.approx(hypervolume.hypervolume([p for p in points if p], scale))

"""The board-side check every TVM export carries (backends/board_check.py, run_model_tvm.py)."""
import numpy as np

from autocompress.backends.board_check import BOARD_TOLERANCE, verdict


def _rows(values):
    return [[np.asarray(v, dtype=np.float32)] for v in values]


def test_a_float_graph_fails_on_its_worst_input():
    want = _rows([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    got = _rows([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0 * (1 + 2 * BOARD_TOLERANCE)]])
    assert not verdict(got, want, requantized=False).ok
    assert verdict(got, want, requantized=True).ok        # the median input holds
    assert verdict(want, want, requantized=False).ok


def test_a_requantized_graph_fails_when_most_inputs_move_or_the_outputs_turn():
    want = _rows([[1.0, 0.0]] * 4)
    assert not verdict(_rows([[1.01, 0.0]] * 4), want, requantized=True).ok   # median 1% off
    turned = _rows([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2)    # half the inputs orthogonal
    result = verdict(turned, want, requantized=True)
    assert result.median > BOARD_TOLERANCE and result.cosine == 0.5 and not result.ok


def test_exit_flags_and_all_zero_outputs_compare_as_equal_values():
    flags = [[np.array([False]), np.zeros(3, np.float32)]]
    result = verdict(flags, flags, requantized=False)
    assert result.ok and result.cosine == 1.0 and result.worst == 0.0
    assert not verdict([[np.array([True]), np.zeros(3)]], flags, requantized=False).ok


def test_a_library_with_other_outputs_fails():
    assert not verdict([[np.zeros(2), np.zeros(2)]], [[np.zeros(2)]], requantized=False).ok
    assert not verdict([[np.zeros(3)]], [[np.zeros(2)]], requantized=False).ok

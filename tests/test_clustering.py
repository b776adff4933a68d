"""Weight clustering: exactly k distinct values per layer, log2(k)-bit packed indices,
deterministic bytes, ONNX Runtime outputs equal to the clustered torch model."""
import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from autocompress.compression.weights import packing
from autocompress.compression.apply import apply_plan
from autocompress.compression.weights.clustering import kmeans_1d, kmeans_many
from autocompress.compression.plan import Plan
from autocompress.compression.weights.sparsity import magnitude_prune
from tests.tiny_workload import N_FC1, make_workload, torch_outputs
from tests.tiny_workload import onnx_outputs as outputs



@pytest.fixture(scope="module")
def tiny():
    return make_workload()


def test_kmeans_has_k_values_is_deterministic_and_near_sklearn():
    from sklearn.cluster import KMeans

    values = np.random.default_rng(0).standard_normal(4096).astype(np.float32)
    palette, index = kmeans_1d(values, 16)
    again = kmeans_1d(values.copy(), 16)
    assert palette.size == 16 and np.unique(palette[index]).size == 16
    np.testing.assert_array_equal(palette, again[0])
    np.testing.assert_array_equal(index, again[1])
    ours = float(((palette[index] - values) ** 2).sum())
    theirs = KMeans(16, n_init=3, random_state=0).fit(values[:, None]).inertia_
    assert ours < 1.1 * theirs
    few = np.repeat(np.arange(5, dtype=np.float32), 10)   # fewer distinct values than k
    palette, index = kmeans_1d(few, 16)
    np.testing.assert_array_equal(palette[index], few)


@pytest.mark.parametrize("k,bits", [(16, 4), (64, 6)])
def test_clustered_layer_stores_packed_indices_and_matches_torch(tmp_path, tiny, k, bits):
    art = apply_plan(Plan({"fc1": {"clusters": k, "quant": "w8a8"}}), tiny, tmp_path / "c.onnx")
    inits = {i.name: i for i in onnx.load(str(art.path)).graph.initializer}
    codes = next(i for n, i in inits.items() if n.endswith("_codes"))
    lut = next(i for n, i in inits.items() if n.endswith("_lut"))
    assert codes.data_type == TensorProto.UINT8 and len(codes.raw_data) == N_FC1 * bits // 8
    palette = onnx.numpy_helper.to_array(lut)
    index = packing.unpack_codes(np.frombuffer(codes.raw_data, np.uint8), N_FC1, bits)
    rebuilt = palette[index].reshape(64, 128)
    assert palette.size == k and np.unique(rebuilt).size == k
    model = copy.deepcopy(tiny.model)
    original = model.fc1.weight.detach().numpy().T
    assert np.sqrt(((rebuilt - original) ** 2).mean()) < original.std() * 4 / k
    model.fc1.weight.data = torch.from_numpy(rebuilt.T.copy())
    np.testing.assert_allclose(outputs(art.path, tiny), torch_outputs(model, tiny), atol=1e-5)


def test_clusters_with_sparsity_keep_zero_plus_k_values(tmp_path, tiny):
    art = apply_plan(Plan({"fc2": {"clusters": 16, "sparsity": 0.9}}), tiny, tmp_path / "c.onnx")
    inits = {i.name: i for i in onnx.load(str(art.path)).graph.initializer}
    codes = next(i for n, i in inits.items() if n.endswith("_codes"))
    kept = N_FC1 - round(N_FC1 * 0.9)
    assert len(codes.raw_data) == -(-kept * 4 // 8)
    model = copy.deepcopy(tiny.model)
    pruned = magnitude_prune(model.fc2.weight.detach().numpy().T, 0.9)
    mask = pruned != 0
    palette, index = kmeans_1d(pruned[mask], 16)
    pruned[mask] = palette[index]
    assert np.unique(pruned).size == 17
    model.fc2.weight.data = torch.from_numpy(pruned.T.copy())
    np.testing.assert_allclose(outputs(art.path, tiny), torch_outputs(model, tiny), atol=1e-5)


def test_clustered_plans_give_the_same_bytes(tmp_path, tiny):
    plan = Plan({"fc1": {"clusters": 64}, "fc2": {"clusters": 16, "sparsity": 0.9}})
    a = apply_plan(plan, tiny, tmp_path / "a.onnx")
    b = apply_plan(plan, tiny, tmp_path / "b.onnx")
    assert a.sha256 == b.sha256


def test_clustering_many_weights_together_gives_each_its_own_answer():
    """kmeans_many (QAT's one call per step) equals kmeans_1d one weight at a time, element
    for element, whatever the mix of sizes, k, dtypes and degenerate inputs."""
    rng = np.random.default_rng(5)
    items = [(rng.standard_normal(3000).astype(np.float32), 16),
             (rng.laplace(size=500) * 0.01, 16),
             (np.repeat(np.float32([1.0, -2.0, 0.5]), 40), 16),        # fewer values than k
             (np.zeros(0, np.float32), 4),                              # pruned away
             (rng.standard_t(3, 20000).astype(np.float32), 64),
             (rng.integers(-30, 30, 4000).astype(np.float32), 16),      # many ties
             (rng.standard_normal(800).astype(np.float32), 4)]
    together = kmeans_many(items)
    assert len(together) == len(items)
    for (values, k), (palette, index) in zip(items, together):
        alone = kmeans_1d(values, k)
        np.testing.assert_array_equal(palette, alone[0])
        np.testing.assert_array_equal(index, alone[1])
        assert palette.dtype == np.float32 and index.dtype == np.int64


def test_codes_and_histogram_are_the_searches_they_replace():
    """QAT's fast paths (clustering._codes, clustering._histogram) give numpy's own answers,
    on the values where float32 and float64 comparisons could part: midpoints that fall
    between two float32 values or exactly on one, signed zeros, and float64 input."""
    from autocompress.compression.weights.clustering import _codes, _histogram

    rng = np.random.default_rng(7)
    palette = np.unique(np.concatenate([np.float32([-0.5, 0.0, 1e-8, 0.3, 0.30000001]),
                                        rng.standard_normal(60).astype(np.float32)]))
    bounds = (palette[:-1].astype(np.float64) + palette[1:]) / 2
    assert (bounds.astype(np.float32) > bounds).any(), "some midpoints round up to float32"
    near = np.concatenate([bounds, np.nextafter(bounds, np.inf), np.nextafter(bounds, -np.inf)])
    for values in (np.concatenate([near.astype(np.float32), palette, np.float32([-0.0, 0.0]),
                                   rng.standard_normal(5000).astype(np.float32)]),
                   np.concatenate([near, rng.standard_normal(500)])):           # float64
        np.testing.assert_array_equal(_codes(values, palette), np.searchsorted(bounds, values))
        data = np.sort(values.astype(np.float64))
        counts, edges = _histogram(data, 64)
        expected = np.histogram(data, bins=64)
        np.testing.assert_array_equal(counts, expected[0])
        np.testing.assert_array_equal(edges, expected[1])

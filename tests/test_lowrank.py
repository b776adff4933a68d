"""Low-rank factorization: the truncated SVD, ranks snapped to multiples of 8, only ranks that save."""
import numpy as np
import torch
from torch import nn

from autocompress.compression.structural.lowrank import (LowRank, factor_rank, factor_saves,
                                                         factorize, rank_knobs, saves_parameters)


def test_ranks_snap_up_to_multiples_of_eight_within_the_full_rank():
    assert factor_rank(384, 0.25) == 96
    assert factor_rank(20, 0.5) == 16        # 10 -> 16
    assert factor_rank(12, 0.9) == 12        # 11 -> 16, capped at the full rank
    assert factor_rank(10, 0.1) == 1
    assert factor_saves(100, 100, 49) and not factor_saves(100, 100, 50)


@torch.no_grad()
def test_a_factorised_linear_is_the_truncated_svd_of_its_weight():
    torch.manual_seed(0)
    layer = nn.Linear(48, 40)
    pair = factorize(layer, 16)
    assert isinstance(pair, LowRank) and sum(p.numel() for p in pair.parameters()) < \
        sum(p.numel() for p in layer.parameters())
    x = torch.randn(5, 48)
    u, s, vt = np.linalg.svd(layer.weight.double().numpy(), full_matrices=False)
    truncated = (u[:, :16] * s[:16]) @ vt[:16]
    expected = x.double().numpy() @ truncated.T + layer.bias.double().numpy()
    np.testing.assert_allclose(pair(x).double().numpy(), expected, atol=1e-5)
    full = factorize(layer, 40)
    torch.testing.assert_close(full(x), layer(x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_factorised_embedding_returns_the_truncated_rows():
    torch.manual_seed(0)
    table = nn.Embedding(2000, 32)
    pair = factorize(table, 8)
    ids = torch.tensor([[0, 5, 1999]])
    u, s, vt = np.linalg.svd(table.weight.double().numpy(), full_matrices=False)
    rows = ((u[:, :8] * s[:8]) @ vt[:8])[[0, 5, 1999]]
    np.testing.assert_allclose(pair(ids)[0].double().numpy(), rows, atol=1e-5)


def test_only_ranks_that_save_parameters_are_offered():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8), nn.Embedding(1000, 16))
    knobs = {k.unit: k.choices for k in rank_knobs(model)[0]}
    assert knobs["0"] == (1.0, 0.25, 0.125)   # 64x64 at rank 32: 32 * 128 weights, no fewer
    assert "1" not in knobs                                 # 8 outputs: under MIN_FACTOR_DIM
    assert knobs["2"][0] == 1.0 and all(saves_parameters(model[2], factor_rank(16, r))
                                        for r in knobs["2"][1:])

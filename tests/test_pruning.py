"""Structured pruning of attention heads and FFN neurons: the weakest go, the rest compute as before."""
import torch
from torch import nn

from autocompress.compression.structural.pruning import (NEURON_ROUND_TO, attention_units,
                                                         ffn_units, prune_heads, prune_neurons)
from autocompress.workloads.minilm import FeedForward, SelfAttention


def _seeded(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.2)
    return module


@torch.no_grad()
def test_heads_that_contribute_nothing_are_the_ones_removed_and_outputs_stay_the_same():
    attention = _seeded(SelfAttention(hidden=32, num_heads=4, head_dim=8))
    for dead in (1, 3):                      # heads 1 and 3: no value, no output weight
        rows = slice(dead * 8, dead * 8 + 8)
        attention.v.weight[rows] = 0
        attention.v.bias[rows] = 0
        attention.o.weight[:, rows] = 0
        attention.q.weight[rows] *= 0.01
        attention.k.weight[rows] *= 0.01
    x, mask = torch.randn(2, 5, 32), torch.zeros(2, 1, 1, 5)
    before = attention(x, mask)
    prune_heads(attention, 0.5)
    assert attention.num_heads == 2
    assert attention.q.out_features == attention.v.out_features == attention.o.in_features == 16
    torch.testing.assert_close(attention(x, mask), before, atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_neurons_with_the_smallest_weights_go_and_the_width_stays_a_multiple_of_eight():
    ffn = _seeded(FeedForward(hidden=16, intermediate=64))
    weak = torch.arange(0, 64, 2)            # every other neuron: no output weight
    ffn.fc2.weight[:, weak] = 0
    x = torch.randn(3, 16)
    before = ffn(x)
    prune_neurons(ffn, 0.5)
    assert ffn.fc1.out_features == ffn.fc2.in_features == 32
    torch.testing.assert_close(ffn(x), before, atol=1e-6, rtol=1e-5)
    prune_neurons(ffn, 0.3)                  # 32 * 0.7 = 22.4 -> 24, a multiple of 8
    assert ffn.fc1.out_features % NEURON_ROUND_TO == 0 and ffn.fc1.out_features == 24


def test_units_are_recognised_by_shape_not_by_class():
    model = nn.Module()
    model.attention = SelfAttention(hidden=16, num_heads=2, head_dim=8)
    model.ffn = FeedForward(hidden=16, intermediate=32)
    model.other = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 16))
    assert attention_units(model) == ["attention"] and ffn_units(model) == ["ffn"]

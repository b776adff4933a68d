"""Vocabulary pruning: the rows a corpus uses stay, with their exact values; unseen ids fall back."""
import numpy as np
import torch
from torch import nn

from autocompress.compression.structural.vocab import VocabPruned, embedding_inputs, prune_vocab


@torch.no_grad()
def test_kept_rows_are_exact_and_unseen_ids_map_to_the_fallback_row():
    torch.manual_seed(0)
    table = nn.Embedding(50, 4)
    corpus = [np.array([[3, 7, 7]]), np.array([[42, 3]])]
    pruned = prune_vocab(table, corpus, fallback_id=1)
    assert isinstance(pruned, VocabPruned) and pruned.embed.num_embeddings == 4   # 1, 3, 7, 42
    ids = torch.tensor([[3, 7, 42, 1, 0, 49]])
    out = pruned(ids)[0]
    torch.testing.assert_close(out[:4], table(torch.tensor([3, 7, 42, 1])))
    torch.testing.assert_close(out[4], table.weight[1])       # unseen -> [fallback]
    torch.testing.assert_close(out[5], table.weight[1])


def test_the_embedding_an_input_feeds_is_found_by_tracing():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.Embedding(30, 4)
            self.positions = nn.Embedding(30, 4)

        def forward(self, ids):
            return self.words(ids) + self.positions(torch.arange(ids.shape[1]))[None]

    feeds = embedding_inputs(Model(), [torch.tensor([[1, 2, 3]])], ["input_ids"])
    assert feeds == {"words": "input_ids"}

"""`autocompress techniques`: every technique listed; a model's skipped layers named."""
from autocompress.cli import main
from autocompress.compression.registry import TECHNIQUES, technique_of

ISSUE_TABLE = ("unstructured pruning", "structured pruning", "depth pruning",
               "post-training quantization", "quantization-aware training",
               "knowledge distillation", "low-rank factorization", "tensor decomposition",
               "weight clustering", "cross-layer sharing", "module replacing", "early exit",
               "vocabulary pruning")


def test_every_technique_is_listed(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["techniques"]) == 0
    out = capsys.readouterr().out
    assert sorted(t.name for t in TECHNIQUES) == sorted(ISSUE_TABLE)
    for name in ISSUE_TABLE:
        assert name in out


def test_a_model_lists_its_skipped_layers_with_technique_and_reason(capsys):
    assert main(["techniques", "--model", "tests.tiny_workload:make_workload"]) == 0
    out = capsys.readouterr().out
    # the MLP has no convolution: decomposition has nothing to act on, replacing skips the
    # model-as-FFN, and each skip names the layer and the technique
    assert "skipped: module replacing not offered for '(model)'" in out


def test_knob_labels_map_to_table_rows():
    assert technique_of("structured pruning (attention heads)") == "structured pruning"
    assert technique_of("magnitude sparsity") == "unstructured pruning"
    assert technique_of("static int8 activations (calibration method)") == "post-training quantization"

"""TVM compiles candidates for each target; RPC measures them on a loopback "board"."""
import json

import numpy as np
import onnx
import pytest

from autocompress import api
from autocompress.backends import tvm_compile, tvm_rpc
from autocompress.compression.apply import apply_plan
from autocompress.compression.plan import Plan
from autocompress.device_profiles import resolve_target
from autocompress.workloads import load_workload

TINY = "tests.tiny_workload:make_workload"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits-cnn, fp32 and one compressed candidate, as ONNX files."""
    workload = load_workload("digits-cnn")
    folder = tmp_path_factory.mktemp("tvm")
    fp32 = apply_plan(Plan({}), workload, folder / "fp32.onnx").path
    shapes = {k: v.shape for k, v in workload.example.items()}
    return workload, fp32, shapes


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_host_library_runs_here_and_matches_onnx_runtime(digits, cache):
    from autocompress.backends import ort_runner

    workload, fp32, shapes = digits
    library = tvm_compile.compile_onnx(fp32, shapes, resolve_target("host"))
    assert library.target.runs_here and not library.cached
    assert tvm_compile.elf_machine(library.path) == "x86-64"
    session = ort_runner.make_session(fp32)
    for batch in workload.evaluation[:2]:
        one = {k: v[:1] for k, v in batch.items()}
        ours = tvm_compile.run_local(library.path, one, workload.input_names)[0]
        reference = session.run(None, one)[0]
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    again = tvm_compile.compile_onnx(fp32, shapes, resolve_target("host"))
    assert again.cached and again.path == library.path and again.compile_s == 0.0


@pytest.mark.parametrize("target", ["raspberry-pi-4", "raspberry-pi-5"])
def test_raspberry_pi_library_is_an_aarch64_elf(digits, cache, target):
    _, fp32, shapes = digits
    library = tvm_compile.compile_onnx(fp32, shapes, resolve_target(target))
    assert library.target.cross_compiler == "aarch64-linux-gnu-gcc"
    assert tvm_compile.elf_machine(library.path) == "aarch64"
    assert not library.target.runs_here


def test_jetson_nano_gets_cuda_kernels_for_sm_53_and_an_aarch64_host(digits, cache):
    """TVM's CUDA C is compiled here by NVRTC 11.8 (cuda_compile): the library packs a cubin,
    SASS for sm_53 by its ELF header, with code for every kernel the host part launches, and
    no CUDA C left for the board to compile."""
    from autocompress.backends import cuda_compile, tvm_blob

    _, fp32, shapes = digits
    profile = resolve_target("jetson-nano")
    target = tvm_compile.resolve_target(profile)
    assert target.kind == "cuda"
    assert str(target.target.attrs["arch"]) == "sm_53"
    library = tvm_compile.compile_onnx(fp32, shapes, profile)
    assert tvm_compile.elf_machine(library.path) == "aarch64"
    cuda = tvm_blob.cuda_module(tvm_blob.library_blob(library.path))   # what TVM's loader reads
    assert cuda.fmt == "cubin" and cuda_compile.cubin_arch(cuda.code) == "sm_53"
    assert len(cuda.kernels) >= 10                          # one kernel per fused operator
    assert all(f".text.{name}\0".encode() in cuda.code for name in cuda.kernels)
    assert b"__global__" not in library.path.read_bytes()


def test_a_kernel_nvrtc_rejects_is_named_in_one_line():
    from autocompress.backends import cuda_compile

    source = 'extern "C" __global__ void wait_kernel(unsigned* t) {\n  __nanosleep(t[0]);\n}\n'
    assert cuda_compile.cubin_arch(cuda_compile.compile_cubin(source, "sm_87")) == "sm_87"
    with pytest.raises(cuda_compile.CudaCompileError) as err:     # __nanosleep needs sm_70
        cuda_compile.compile_cubin(source, "sm_53")
    assert str(err.value) == ('NVRTC 11.8 cannot compile kernel wait_kernel for sm_53: '
                              'identifier "__nanosleep" is undefined')


def test_unparseable_tvm_target_is_a_clear_error():
    from dataclasses import replace

    broken = replace(resolve_target("raspberry-pi-4"), tvm_target={"kind": "no-such-kind"})
    with pytest.raises(tvm_compile.TvmError, match="cannot parse tvm_target"):
        tvm_compile.resolve_target(broken)


def test_rpc_measures_on_loopback_boards_in_parallel(digits, cache):
    workload, fp32, shapes = digits
    library = tvm_compile.compile_onnx(fp32, shapes, resolve_target("host"))
    with tvm_rpc.local_farm(boards=2, key="host") as device:
        assert device.tracker_host == "127.0.0.1"
        assert device.check() == 2
        one = device.measure(library.path, workload.example, workload.input_names)
        assert one.repeats == device.repeat and len(one.samples_s) == device.repeat
        assert one.p10_s <= one.median_s <= one.p90_s
        assert one.peak_ram_bytes is not None and one.peak_ram_bytes > 0
        # no power sensors in this VM: said so, not faked
        assert one.energy_j is None
        assert any("RAPL" in reason for reason in one.absent)
        results = device.measure_many([(library.path, workload.example, workload.input_names)] * 4)
        assert all(isinstance(r, tvm_rpc.DeviceMeasurement) for r in results)
        assert len({r.board for r in results}) == 2, "both boards of the farm were used"


def test_search_with_rpc_lands_measured_numbers_in_pareto_json(tmp_path, cache):
    with tvm_rpc.local_farm(boards=1, key="host") as device:
        config = api.SearchConfig(model=TINY, target="host", trials=2, out=str(tmp_path / "run"),
                                  rpc_tracker=f"127.0.0.1:{device.tracker_port}", rpc_key="host")
        api.search(config)
    document = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert document["front"]
    for point in document["front"]:
        provenance = point["provenance"]["latency_s"]
        assert provenance["kind"] == "measured"
        assert provenance["rpc"] == f"host@127.0.0.1:{device.tracker_port}"
        assert provenance["runtime"].startswith("TVM")
        assert point["latency_s"] == provenance["median_s"]
        assert provenance["p10_s"] <= provenance["median_s"] <= provenance["p90_s"]


def test_unreachable_tracker_is_one_line_and_exit_2(tmp_path, capsys):
    from autocompress.cli import main

    code = main(["search", "--model", TINY, "--target", "host", "--trials", "1",
                 "--rpc-tracker", "127.0.0.1:1", "--rpc-key", "pi4", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach the RPC tracker" in err[0]


# ------------------------------------------------------------------ every artifact format

def _format_cases():
    """(name, workload factory, plan factory): one small model per format the search emits."""
    from autocompress.compression.weights.knobs import torch_weight_knobs, uniform_plan
    from tests.conv_workload import make_workload as conv
    from tests.fixture_models import exit_cnn_workload, exit_transformer_workload
    from tests.tiny_workload import make_workload as mlp

    def uniform(**knobs):
        return lambda w: uniform_plan(torch_weight_knobs(w.model)[0], **knobs)

    cases = [(q, mlp, uniform(quant=q)) for q in
             ("float", "w16", "w8", "w4", "w3", "w2", "w8a8", "w8a8c", "w8a8cf")]
    cases += [("palette", mlp, uniform(clusters=16)), ("sparse", mlp, uniform(sparsity=0.75)),
              ("sparse-w4", mlp, uniform(sparsity=0.75, quant="w4")),
              ("static-qdq", mlp, uniform(quant="w8", calibration="minmax")),
              ("conv-w4", conv, uniform(quant="w4")),
              ("conv-w8a8", conv, uniform(quant="w8a8")),          # ConvInteger
              ("conv-static-qdq", conv, uniform(quant="w8", calibration="minmax")),
              ("exit-cnn", exit_cnn_workload, lambda w: Plan({"blocks": {"exit_after": "blocks.1"}})),
              ("exit-transformer", lambda: exit_transformer_workload(True),
               lambda w: Plan({"layers": {"exit_after": "layers.2"}}))]
    return cases


FORMATS = {name: (make, plan) for name, make, plan in _format_cases()}


@pytest.fixture(scope="module")
def format_artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    built, workloads = {}, {}
    for name, (make, plan) in FORMATS.items():
        workload = workloads.setdefault(make, make())
        built[name] = (workload, apply_plan(plan(workload), workload, folder / f"{name}.onnx").path)
    return built


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_compiles_on_host_and_matches_onnx_runtime(format_artifacts, cache, name):
    """Criterion (backends/tvm_check.py): within 1e-5 of the output range of ORT's graph
    arithmetic, teacher-forced where activations are requantized (tests/test_tvm_agreement.py)."""
    from autocompress.backends import tvm_check

    workload, path = format_artifacts[name]
    shapes = {k: v.shape for k, v in workload.example.items()}
    library = tvm_compile.compile_onnx(path, shapes, resolve_target("host"), use_tuning=False)
    agreement = tvm_check.compare(library.path, path, workload.evaluation,
                                  workload.input_names, shapes)
    assert agreement.inputs >= 8
    assert agreement.ok, agreement.describe()


@pytest.mark.parametrize("name", ["w4", "conv-w8a8", "static-qdq", "exit-transformer"])
@pytest.mark.parametrize("target", ["raspberry-pi-5", "jetson-nano"])
def test_hard_formats_cross_compile_for_boards(format_artifacts, cache, name, target):
    workload, path = format_artifacts[name]
    shapes = {k: v.shape for k, v in workload.example.items()}
    library = tvm_compile.compile_onnx(path, shapes, resolve_target(target), use_tuning=False)
    assert tvm_compile.elf_machine(library.path) == "aarch64"


def test_an_op_tvm_cannot_convert_is_named_with_the_target_in_one_line(tmp_path, cache):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("DFT", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "dft.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(tvm_compile.TvmError) as err:
        tvm_compile.compile_onnx(path, {"x": (1, 8, 1)}, resolve_target("raspberry-pi-4"))
    message = str(err.value)
    assert "\n" not in message
    assert "cannot lower ONNX op DFT for raspberry-pi-4" in message


def test_shape_subgraphs_are_folded_for_a_transformer(tmp_path, cache):
    """The MiniLM failure (issue 14): Shape -> Gather chains reached TVM as R.Shape values."""
    from autocompress.backends import tvm_prepare
    from tests.tiny_transformer import make_tiny_transformer

    workload = make_tiny_transformer()
    path = apply_plan(Plan({}), workload, tmp_path / "tf.onnx").path
    shapes = {k: v.shape for k, v in workload.example.items()}
    before = [n.op_type for n in onnx.load(str(path)).graph.node]
    after = [n.op_type for n in tvm_prepare.prepare(onnx.load(str(path)), shapes).graph.node]
    assert before.count("Shape") >= 3 and "Shape" not in after
    assert tvm_compile.import_onnx(path, shapes) is not None

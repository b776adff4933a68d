"""Device profiles: schema validation names the broken field; `profile --local` writes a valid one."""
import json

import pytest

from autocompress.cli import main
from autocompress.device_profiles import ProfileError, known_targets, load_profile, resolve_target

BUILT_IN = ("jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5", "host")


def test_the_boards_the_readme_names_are_built_in():
    assert set(BUILT_IN) <= set(known_targets())


@pytest.mark.parametrize("name", known_targets())
def test_every_profile_loads_with_a_tvm_target_sources_and_a_faithful_round_trip(name):
    from autocompress.backends.tvm_compile import resolve_target as tvm_target
    from autocompress.device_profiles import DeviceProfile

    profile = resolve_target(name)
    assert profile.peak_ops_per_s["int8"] > 0 and profile.memory_bandwidth_bytes_per_s > 0
    for field in ("peak_ops_per_s", "memory_bandwidth_bytes_per_s", "power_w", "energy"):
        assert profile.sources[field].strip()
    assert tvm_target(profile).target is not None       # TVM parses its target
    assert DeviceProfile.from_dict(profile.to_dict(), name) == profile


def test_host_profile_reads_this_machine():
    profile = resolve_target("host")
    flags = open("/proc/cpuinfo").read()
    assert profile.cores >= 1
    assert ("avx2" in profile.features) == (" avx2" in flags)


@pytest.mark.parametrize("path, value, field", [
    (("peak_ops_per_s", "int8"), -1, "peak_ops_per_s.int8"),
    (("memory_bandwidth_bytes_per_s",), "fast", "memory_bandwidth_bytes_per_s"),
    (("power_w", "idle"), None, "power_w.idle"),
    (("sources", "energy"), "", "sources.energy"),
    (("tvm_target",), 7, "tvm_target"),
])
def test_a_broken_profile_names_the_field(tmp_path, path, value, field):
    data = resolve_target("raspberry-pi-4").to_dict()
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=f"field '{field}'"):
        load_profile(broken)


def test_broken_profile_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    data = resolve_target("raspberry-pi-4").to_dict()
    del data["ram_bytes"]
    broken = tmp_path / "pi.json"
    broken.write_text(json.dumps(data))
    code = main(["search", "--profile", str(broken), "--model", "tests.tiny_workload:make_workload",
                 "--trials", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "'ram_bytes'" in err[0]


def test_profile_local_writes_a_valid_calibrated_profile(tmp_path, capsys):
    out = tmp_path / "measured-host.json"
    assert main(["profile", "--local", "--name", "my-host", "--out", str(out)]) == 0
    profile = load_profile(out)             # passes the schema
    assert profile.name == "my-host"
    bench = {r["name"]: r for r in profile.calibration["microbenchmarks"]}
    fp32 = [r["rate"] for r in bench.values() if r["measures"] == "ops:fp32" and "rate" in r]
    assert profile.peak_ops_per_s["fp32"] == max(fp32)
    assert profile.memory_bandwidth_bytes_per_s == bench["add_bandwidth"]["rate"]
    assert profile.kernel_overhead_s == bench["add_overhead"]["seconds"]
    assert profile.efficiency == 1.0
    assert "measured by `autocompress profile`" in profile.sources["peak_ops_per_s"]
    # the int8 kernels ONNX Runtime has (MatMulInteger) ran and were measured
    assert "rate" in bench["matmul_int8_128x1024x1024"]
    # and the written profile drives a search
    assert main(["search", "--profile", str(out), "--model", "tests.tiny_workload:make_workload",
                 "--trials", "1", "--out", str(tmp_path / "run")]) == 0

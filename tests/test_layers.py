"""The package's import graph: no cycles between modules, and every import runs down the layers.

Built with grimp (import-linter's graph builder), which reads every import statement,
including those inside functions: a lazy import is still a dependency.
"""
import graphlib
from collections import defaultdict

import grimp
import pytest

LAYERS = (
    {"cli"},
    {"planning", "export", "supervisor"},
    {"api"},
    {"workers", "finalize"},
    {"budget_plans", "run_config", "report", "sensitivity"},
    {"search"},
    {"pipeline"},
    {"cost_models", "workloads"},
    {"compression"},
    {"backends"},
    {"device_profiles"},
    {"verdict"},
    {"crash_note", "crash_hook", "files", "paths", "trial_record", "units", "__init__"},
)
"""Top to bottom: a module imports only from layers below its own. Packages in one layer
are independent of each other; a new top-level module or package needs a place here."""

COMPRESSION_LAYERS = (
    {"qat"},
    {"apply", "knobs"},
    {"early_exit"},
    {"compact", "initializers"},
    {"structural", "weights"},
    {"training"},
    {"registry"},
    {"blocks", "fidelity", "plan", "records", "tracing", "__init__"},
)
"""The same inside compression/: its stages (structural/, weights/, training/) and the
records, registry and plan every stage shares at the bottom."""


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("autocompress")


def _part(module: str, depth: int = 1) -> str:
    parts = module.split(".")
    return parts[depth] if len(parts) > depth else "__init__"


def test_no_module_imports_itself_through_others(graph):
    sorter = graphlib.TopologicalSorter({m: graph.find_modules_directly_imported_by(m)
                                         for m in graph.modules})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def _upward(graph, layers, prefix: str) -> tuple[list, dict]:
    """(parts not placed in ``layers``, imports that do not run down them) among the modules
    under ``prefix``; a part is the name one level below it."""
    depth = prefix.count(".") + 1
    rank = {part: level for level, layer in enumerate(layers) for part in layer}
    modules = sorted(m for m in graph.modules if m == prefix or m.startswith(prefix + "."))
    unplaced = sorted({_part(m, depth) for m in modules} - set(rank))
    upward = defaultdict(list)
    for module in modules:
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if not imported.startswith(prefix + ".") or unplaced:
                continue
            a, b = _part(module, depth), _part(imported, depth)
            if a != b and rank[b] <= rank[a]:
                line = graph.get_import_details(importer=module, imported=imported)[0]
                upward[f"{a} -> {b}"].append(f"{module}:{line['line_number']}")
    return unplaced, dict(upward)


@pytest.mark.parametrize("prefix, layers", [("autocompress", LAYERS),
                                            ("autocompress.compression", COMPRESSION_LAYERS)])
def test_every_import_runs_down_the_layers(graph, prefix, layers):
    unplaced, upward = _upward(graph, layers, prefix)
    assert not unplaced, f"place these in the layers of {prefix}: {unplaced}"
    assert not upward, f"imports that do not run down the layers: {upward}"


def test_the_check_sees_lazy_imports(graph):
    """An import inside a function counts (apply's early-exit build is imported lazily)."""
    assert "autocompress.compression.early_exit" in graph.find_modules_directly_imported_by(
        "autocompress.compression.apply")

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


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("autocompress")


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_module_imports_itself_through_others(graph):
    sorter = graphlib.TopologicalSorter({m: graph.find_modules_directly_imported_by(m)
                                         for m in graph.modules})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def test_every_import_runs_down_the_layers(graph):
    rank = {part: depth for depth, layer in enumerate(LAYERS) for part in layer}
    unplaced = sorted({_part(m) for m in graph.modules} - set(rank))
    assert not unplaced, f"place these in LAYERS: {unplaced}"
    upward = defaultdict(list)
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            a, b = _part(module), _part(imported)
            if a != b and rank[b] <= rank[a]:
                line = graph.get_import_details(importer=module, imported=imported)[0]
                upward[f"{a} -> {b}"].append(f"{module}:{line['line_number']}")
    assert not upward, f"imports that do not run down the layers: {dict(upward)}"


def test_the_check_sees_lazy_imports(graph):
    """An import inside a function counts (apply's early-exit build is imported lazily)."""
    assert "autocompress.compression.early_exit" in graph.find_modules_directly_imported_by(
        "autocompress.compression.apply")

"""Build plans in this (fresh) process and print each artifact's sha256, one JSON line.

    python -m tests.rebuild_plans WORKLOAD THREADS PLANS.json

``tests/test_export.py`` runs it twice, with different torch thread counts (as search
workers get), and compares the bytes.
"""
import hashlib
import json
import sys
import tempfile
from pathlib import Path


def main(workload_spec: str, threads: int, plans_file: str) -> None:
    import torch

    from autocompress.compression.apply import PlanError, apply_plan
    from autocompress.compression.plan import Plan
    from autocompress.workloads import load_workload

    workload = load_workload(workload_spec)
    torch.set_num_threads(threads)
    digests = []
    with tempfile.TemporaryDirectory() as folder:
        for i, plan in enumerate(json.loads(Path(plans_file).read_text())):
            try:
                path = apply_plan(Plan.from_dict(plan), workload, Path(folder) / f"{i}.onnx").path
                digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
            except PlanError as err:
                digests.append(f"PlanError: {err}")
    print(json.dumps(digests))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])

"""Does a gradient-boosted residual on top of the NNLS latency fit help? (It did not.)

Usage: .venv/bin/python benchmarks/cost_model_residual.py [--workloads digits-cnn]
Reuses the candidates and measurements benchmarks/cost_model_accuracy.py cached (run that
first), fits the calibrated model on the fit set, then scikit-learn gradient boosting on
log(measured / predicted) with each feature group's share of the prediction as inputs,
and prints held-out MdAPE, share within 20% and Spearman for both.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def main() -> None:
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.ensemble import GradientBoostingRegressor

    import cost_model_accuracy as bench
    from autocompress.cost_models.features import LATENCY_FEATURES, latency_features
    from autocompress.device_profiles import resolve_target

    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="digits-cnn")
    args = parser.parse_args()
    fit, test = [], []
    for name in args.workloads.split(","):
        n_fit, n_test = bench.FULL[name]
        part = bench.collect(name, n_fit, "fit")
        fit += part
        test += bench.collect(name, n_test, "test", exclude={r["plan_digest"] for r in part})
    profile = resolve_target("host")
    model = bench.fit_model(fit, profile)
    weights = model.latency_.to_dict()

    def table(records):
        rows, measured, predicted = [], [], []
        for r in records:
            f = latency_features(profile, bench.describe_record(r))
            p = model.latency_.predict(f)
            rows.append([weights.get(n, 0.0) * f[n] / p for n in LATENCY_FEATURES] + [np.log(p)])
            measured.append(bench.latency_of(r))
            predicted.append(p)
        return np.array(rows), np.array(measured), np.array(predicted)

    x_fit, y_fit, p_fit = table(fit)
    x_test, y_test, p_test = table(test)

    def report(name, prediction):
        error = np.abs(prediction - y_test) / y_test
        print(f"{name:24s} MdAPE {np.median(error):.4f}  within 20% {(error <= 0.2).mean():.3f}  "
              f"Spearman {spearmanr(y_test, prediction).statistic:.3f}")

    report("nnls", p_test)
    for depth in (1, 2, 3):
        boost = GradientBoostingRegressor(max_depth=depth, n_estimators=100, learning_rate=0.05,
                                          subsample=0.8, random_state=0, loss="huber")
        boost.fit(x_fit, np.log(y_fit / p_fit))
        report(f"nnls + boosted (depth {depth})", p_test * np.exp(boost.predict(x_test)))


if __name__ == "__main__":
    main()

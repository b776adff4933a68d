"""Stored trial records for tests that build trials by hand."""
from autocompress.trial_record import TrialMetrics


def metrics_record(quality, size=0, latency=0.0, fidelity="full") -> dict:
    """A trial's stored metrics (trial_record.TrialMetrics) with the numbers a test sets."""
    return TrialMetrics(plan_digest="", artifact_sha256="", quality=quality,
                        quality_metric="accuracy", quality_details={}, size_bytes=size,
                        n_params=0, host_latency={}, host_peak_ram_bytes=None,
                        target={"latency_s": latency}, fidelity=fidelity).to_dict()

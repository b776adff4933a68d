"""ONNX files no one here wrote (issue 15): silero-vad's six models on real speech.

Usage: .venv/bin/python benchmarks/foreign_onnx.py [--trials 12] [--only silero_vad.onnx,...]
       [--keep DIR]

1. ``pip download silero-vad==6.2.3`` (the wheel ships ``silero_vad/data/*.onnx``; nothing is
   committed) into a temporary folder.
2. Real speech: espeak-ng (Debian) speaks :data:`SENTENCES` in several voices and speeds,
   with pauses between them (a voice-activity detector must see silence too); the 22.05 kHz
   WAVs are resampled to 16 kHz and 8 kHz (scipy).
3. Per model, its inputs as silero's own wrapper (``utils_vad.OnnxWrapper``) feeds them:
   chunks of 512 samples at 16 kHz (256 at 8 kHz) after 64 (32) samples of context, the
   recurrent state the *original* model returned for the previous chunk, and ``sr``.
   The ``sequence`` model takes one sentence's chunks at once. One ``.npz`` per stream
   (sample rate or sentence) in a folder: ``--data FOLDER``.
4. ``autocompress search --model FILE --data FOLDER --target host --trials N`` (a short
   search; no size budget: the front is the whole size/quality trade-off), with an empty
   cache (``AUTOCOMPRESS_CACHE`` in the work folder): preparation and the sensitivity
   analysis are paid as on a fresh machine.

Prints one markdown row per file: weights found, knobs, techniques path, the front's size
range, the smallest point at >= 0.99 fidelity (output cosine to the original over the
held-out input sets) and its host latency beside the original's (ONNX Runtime, the same
timing in one process, median of repeats). Writes results/foreign_onnx.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "results"
WHEEL = "silero-vad==6.2.3"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her on Wednesday.",
    "Compression makes large models small enough for phones and tiny boards.",
    "Voice activity detection decides which parts of a recording hold speech.",
    "It rained all night, so the river rose above the old stone bridge.",
    "A thousand birds flew south before the first frost of the year.",
    "Turn left at the second light, then keep going until you see the bakery.",
    "Numbers like seven hundred and forty two are hard to hear in noise.",
    "Good morning, this is a short test of the speech detector.",
]
VOICES = ["en", "en-us", "en+f3", "en+m3"]
SPEEDS = [140, 175]
PAUSE_S = 0.6
FIDELITY = 0.99


def download(folder: Path) -> list[Path]:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d",
                    str(folder), WHEEL], check=True)
    wheel = next(folder.glob("silero_vad-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.startswith("silero_vad/data/") and n.endswith(".onnx")]
        archive.extractall(folder, names)
    return sorted(folder / n for n in names)


def speech(folder: Path) -> list[np.ndarray]:
    """One float32 waveform per sentence at 22.05 kHz (espeak-ng), each followed by a pause."""
    waves = []
    for k, text in enumerate(SENTENCES):
        path = folder / f"s{k}.wav"
        subprocess.run(["espeak-ng", "-v", VOICES[k % len(VOICES)], "-s", str(SPEEDS[k % 2]),
                        "-w", str(path), text], check=True)
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        rng = np.random.default_rng(k)
        pause = 0.003 * rng.standard_normal(int(PAUSE_S * rate)).astype(np.float32)
        waves.append(np.concatenate([pause, pcm, pause]))
    return waves


def resample(waves: list[np.ndarray], rate: int) -> list[np.ndarray]:
    from scipy.signal import resample_poly

    g = np.gcd(rate, 22050)
    return [resample_poly(w, rate // g, 22050 // g).astype(np.float32) for w in waves]


def input_sets(model_path: Path, waves16: list, waves8: list, out: Path) -> int:
    """Write the model's real input sets into ``out`` (one .npz per stream); returns how many."""
    import onnx

    from autocompress.backends.ort_runner import make_session

    session = make_session(model_path)
    names = [i.name for i in onnx.load(str(model_path)).graph.input]
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    if "h" in names:                       # the sequence model: a sentence per call
        for k, w in enumerate(waves16):
            chunks = _chunks(w, 512, 64)
            np.savez(out / f"sentence{k:02d}.npz", input=chunks,
                     h=np.zeros((1, 1, 128), np.float32), c=np.zeros((1, 1, 128), np.float32))
            count += 1
        return count
    rates = [16000, 8000] if ("sr" in names and "16k" not in model_path.name) else [16000]
    for rate in rates:
        audio = np.concatenate(waves16 if rate == 16000 else waves8)
        chunks = _chunks(audio, 512 if rate == 16000 else 256, 64 if rate == 16000 else 32)
        state = np.zeros((2, 1, 128), np.float32)
        inputs, states = [], []
        for chunk in chunks:
            feed = {"input": chunk[None], "state": state}
            if "sr" in names:
                feed["sr"] = np.array(rate, np.int64)
            inputs.append(chunk[None])
            states.append(state)
            state = session.run(None, feed)[1]
        arrays = {"input": np.stack(inputs), "state": np.stack(states)}
        if "sr" in names:
            arrays["sr"] = np.array(rate, np.int64)
        np.savez(out / f"{rate // 1000}k.npz", **arrays)
        count += len(chunks)
    return count


def _chunks(audio: np.ndarray, size: int, context: int) -> np.ndarray:
    padded = np.concatenate([np.zeros(context, np.float32), audio])
    n = (len(audio)) // size
    return np.stack([padded[i * size: i * size + size + context] for i in range(n)]).astype(np.float32)


def latency_ratio(original: Path, artifact: Path, feed: dict, repeats: int = 400) -> tuple[float, float]:
    """(original, artifact) median latency in seconds, measured alternately in one process."""
    from autocompress.backends.ort_runner import make_session

    a, b = make_session(original), make_session(artifact)
    for s in (a, b):
        for _ in range(20):
            s.run(None, feed)
    times = {0: [], 1: []}
    for _ in range(repeats):
        for k, s in enumerate((a, b)):
            start = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def run_one(path: Path, data: Path, trials: int, work: Path) -> dict:
    import onnx

    from autocompress.workloads import load_workload
    from autocompress.workloads.onnx_file import weight_count

    run_dir = work / f"run-{path.stem}"
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--model", str(path), "--data", str(data),
           "--target", "host", "--trials", str(trials), "--out", str(run_dir)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    row = {"file": path.name, "wall_s": round(time.perf_counter() - start, 1),
           "original_bytes": path.stat().st_size}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return row
    doc = json.loads((run_dir / "pareto.json").read_text())
    workload = load_workload(str(path), data=str(data))
    front = doc["front"]
    row.update({
        "weights_found": weight_count(onnx.load(str(workload.onnx_path))),
        "knobs": doc["workload"]["n_knobs"], "metric": front[0]["quality_metric"] if front else None,
        "techniques_path": "ONNX (weight techniques)", "preparation": doc["workload"].get("preparation"),
        "n_eval": len(workload.evaluation),
        "front_bytes": [min(p["size_bytes"] for p in front), max(p["size_bytes"] for p in front)],
        "front_quality": [min(p["quality"] for p in front), max(p["quality"] for p in front)],
    })
    good = [p for p in front if p["quality"] >= FIDELITY and p["size_bytes"] < row["original_bytes"]]
    if good:
        best = min(good, key=lambda p: p["size_bytes"])
        original_s, artifact_s = latency_ratio(path, run_dir / best["artifact"], workload.example)
        row["smallest_at_fidelity"] = {"id": best["id"], "size_bytes": best["size_bytes"],
                                       "quality": best["quality"], "plan": best.get("plan"),
                                       "latency_s": artifact_s, "original_latency_s": original_s}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| file | weights found | knobs | techniques path | front size (kB) | smallest at >= 0.99 "
             "fidelity | host latency vs original |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['file']} | | | | | {r['error']} | |")
            continue
        best = r.get("smallest_at_fidelity")
        lo, hi = r["front_bytes"]
        lines.append(
            f"| {r['file']} ({r['original_bytes'] / 1e3:.0f} kB) | {r['weights_found']:,} | {r['knobs']} | "
            f"{r['techniques_path']} | {lo / 1e3:.0f}–{hi / 1e3:.0f} | "
            + (f"{best['size_bytes'] / 1e3:.0f} kB at {best['quality']:.4f} | "
               f"{best['latency_s'] * 1e3:.3f} ms vs {best['original_latency_s'] * 1e3:.3f} ms "
               f"({best['latency_s'] / best['original_latency_s']:.2f}x) |"
               if best else "none | |"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--only", help="comma-separated file names")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="foreign-onnx-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["AUTOCOMPRESS_CACHE"] = str(work / "cache")   # cold: as on a fresh machine
    files = download(work / "wheel")
    if args.only:
        files = [f for f in files if f.name in args.only.split(",")]
    waves = speech(work)
    waves16, waves8 = resample(waves, 16000), resample(waves, 8000)
    rows = []
    for path in files:
        data = work / f"data-{path.stem}"
        n = input_sets(path, waves16, waves8, data)
        row = run_one(path, data, args.trials, work)
        row["input_sets"] = n
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "foreign_onnx.json"
    previous = json.loads(out.read_text()) if out.is_file() and args.only else {"rows": []}
    merged = {r["file"]: r for r in previous.get("rows", [])} | {r["file"]: r for r in rows}
    out.write_text(json.dumps({"wheel": WHEEL, "trials": args.trials, "fidelity": FIDELITY,
                               "rows": list(merged.values())}, indent=1) + "\n")
    print(table(list(merged.values())))


if __name__ == "__main__":
    main()

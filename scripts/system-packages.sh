#!/usr/bin/env bash
# Debian packages the project needs beyond Python: the aarch64 cross compiler (TVM exports
# for Raspberry Pi / Jetson), headless Chromium (the report's rendering test) and the
# PostgreSQL server (tests/test_workers.py starts one on loopback), and espeak-ng
# (benchmarks/foreign_onnx.py speaks real sentences for silero-vad's inputs).
# Idempotent; run as root (CI) or with sudo.
set -euo pipefail
PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu chromium postgresql espeak-ng)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

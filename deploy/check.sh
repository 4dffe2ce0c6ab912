#!/usr/bin/env bash
# Checks the Prometheus artefacts in deploy/ with promtool (Debian's
# prometheus package, installed here if missing).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  pkill -x prometheus 2>/dev/null || true
fi
promtool check rules prometheus/alerts.yml
promtool test rules prometheus/alerts_test.yml
promtool check config prometheus/prometheus.yml
promtool check config prometheus/prometheus.compose.yml

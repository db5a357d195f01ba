#!/usr/bin/env bash
# Installs (when missing) and starts the services and models herd's tests use.
# Safe to run repeatedly: what is already installed or running is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== test services: nothing needed yet"

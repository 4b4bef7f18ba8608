#!/usr/bin/env bash
# The GPU machine's check as one command (benchmarks/device_check.py says what it runs):
#   benchmarks/device_check.sh --fill-wheels   here, once: the wheels the machine lacks into .whl/
#   benchmarks/device_check.sh                 there, carrying .whl (results in $OUT/device_check.json)
#   benchmarks/device_check.sh --dry-run       on a CPU with a tiny model (make test runs it)
exec "${PYTHON:-python3}" "$(dirname "$0")/device_check.py" "$@"

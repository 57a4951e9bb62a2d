#!/usr/bin/env bash
# The fast test tier on the lowest torch and transformers that pyproject.toml declares, in a venv of
# its own (.venv-floors), so the floors stay versions the code has really been run with.
# Usage: bash bench/floors.sh   (writes bench/results/floors.json)
set -euo pipefail
cd "$(dirname "$0")/.."
floor() { grep -oE "\"$1>=[0-9.]+" pyproject.toml | head -1 | cut -d= -f2; }
torch_floor=$(floor torch)
transformers_floor=$(floor transformers)
python3 -m venv .venv-floors
.venv-floors/bin/pip install -q -c constraints-cpu.txt "torch==${torch_floor}.*" "transformers==${transformers_floor}.*" -e '.[test]'
versions=$(.venv-floors/bin/python -c "import torch, transformers; print(torch.__version__, transformers.__version__)")
echo "+ fast tier on torch / transformers: $versions"
start=$(date +%s)
rc=0
.venv-floors/bin/python -m pytest -q -m "not slow" -p no:cacheprovider || rc=$?
mkdir -p bench/results
python3 - "$versions" "$rc" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
torch, transformers = sys.argv[1].split()
json.dump({"torch": torch, "transformers": transformers, "pytest_exit": int(sys.argv[2]), "seconds": int(sys.argv[3])},
          open("bench/results/floors.json", "w"), indent=2)
PY
exit "$rc"

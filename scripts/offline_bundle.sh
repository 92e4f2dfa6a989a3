#!/usr/bin/env bash
# physrec's GPU dependencies for a machine with no package index (a cluster's compute node, a
# locked-down GPU box), as one compressed site-packages folder in parts of PART_MB each.
#
#   bash scripts/offline_bundle.sh OUT [PYTHON_VERSION] [HAVE]
#
# PYTHON_VERSION: the target's Python (default 3.12). HAVE: a file with the distribution names
# the target has already, one per line (`pip list --format=freeze` there), left out here;
# torch is always left out (its CUDA build is the target's own); SKIP, a regular expression of
# names, leaves out more (SKIP=imageio-ffmpeg for a machine that renders no videos: 50 MB less).
# Run here, with pip able to
# reach PyPI. It writes OUT/site.tar.xz.part-aa, -ab, ... and OUT/requirements.txt. There:
#
#   cat site.tar.xz.part-* | xz -d | tar -x -C /opt/physrec-site
#   export PYTHONPATH=/opt/physrec-site:/path/to/physrec/workflow
#   python -m physrec check-config        # or: python -m snakemake --cores all
set -euo pipefail

out="$1"
pyver="${2:-3.12}"
have="${3:-}"
part_mb="${PART_MB:-45}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

norm() { tr 'A-Z_.' 'a-z--' | sed 's/-\+/-/g'; }
# What this machine's environment resolved for physrec[gpu] (minus physrec, torch, tools).
python -m pip list --format=freeze 2>/dev/null \
  | grep -v -i -E '^(physrec|torch|nvidia-|triton|pip|setuptools|wheel|ruff|pytest|pluggy|iniconfig)' \
  | grep -v -i -E '^(snakemake-executor-plugin)' | grep -v -i -E "^(${SKIP:-^})==" >"$work/all.txt"
if [ -n "$have" ]; then
  cut -d= -f1 "$have" | norm | sort -u >"$work/have.txt"
  while IFS= read -r req; do
    name="$(echo "${req%%==*}" | norm)"
    grep -qx "$name" "$work/have.txt" || echo "$req"
  done <"$work/all.txt" >"$out/requirements.txt"
else
  cp "$work/all.txt" "$out/requirements.txt"
fi
echo "== $(wc -l <"$out/requirements.txt") distributions for Python $pyver"

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
mkdir -p "$work/wheels" "$work/site"
while IFS= read -r req; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" -d "$work/wheels" "$req" 2>/dev/null \
    || python -m pip wheel -q --no-deps -w "$work/wheels" "$req"  # a source-only release (pure Python)
done <"$out/requirements.txt"
for w in "$work/wheels"/*.whl; do
  unzip -q -o "$w" -d "$work/site"
done
echo "== wheels: $(du -sh "$work/wheels" | cut -f1); unpacked $(du -sh "$work/site" | cut -f1); compressing"
tar -C "$work/site" -cf - . | xz -T0 -7 | split -b "${part_mb}M" - "$out/site.tar.xz.part-"
ls -l "$out"
echo "== $repo/workflow goes on PYTHONPATH beside it (or pip install --no-deps -e there)"

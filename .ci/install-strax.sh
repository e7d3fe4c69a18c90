#!/usr/bin/env bash
# Installs strax 2.2.3 when it is missing: the writer of the strax-data tests (tests/strax) and a
# peer of the storage benchmark. strax pins zarr < 3 and numcodecs < 0.16, which strata cannot
# run with, so strax itself is installed with --no-deps, and the packages it imports are
# installed with every version strata runs with held fixed by a constraints file (the installed
# versions; for what is not installed yet, those of deploy/constraints.txt): pip then refuses a
# downgrade of zarr (or numpy, numcodecs, ...) instead of performing it. The script checks
# afterwards that nothing it holds fixed has moved.
set -euo pipefail

PY="${PYTHON:-python}"
STRAX_VERSION="2.2.3"
# What `import strax` and its DataDirectory (compressors blosc, zstd, lz4, bz2) need: numba for
# its processing functions, the compression libraries strax/io.py imports, pymongo for bson's
# json_util (strax/storage/files.py), and the rest of its `import`s. Not zarr: strax imports it
# only to export zarr files.
DEPS=(numpy pandas fsspec numba blosc lz4 zstd zstandard deepdiff immutabledict numexpr dill
      pymongo tqdm pytz scipy click packaging psutil)
# Held at their installed (or strata's pinned) versions while the above are installed.
HOLD=(zarr numcodecs numpy pandas fsspec dask distributed click packaging psutil)
PINS="$(dirname "$0")/../deploy/constraints.txt"

have() {
    "$PY" - "$@" <<'PYEOF'
import importlib.metadata as md, sys
try:
    sys.exit(0 if md.version(sys.argv[1]) == sys.argv[2] else 1)
except md.PackageNotFoundError:
    sys.exit(1)
PYEOF
}

strax_imports() {
    "$PY" -c "import strax, blosc, zstd, zstandard, lz4.frame, bson" >/dev/null 2>&1
}

if have strax "$STRAX_VERSION" && strax_imports; then
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$PINS" "${HOLD[@]}" >"$tmp/hold.txt" <<'PYEOF'
import importlib.metadata as md, os, sys
pins = {}
if os.path.exists(sys.argv[1]):
    for line in open(sys.argv[1]):
        name, sep, version = line.strip().partition("==")
        if sep and not name.startswith("#"):
            pins[name.lower()] = version
for name in sys.argv[2:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        if name in pins:
            print(f"{name}=={pins[name]}")
PYEOF

echo "install-strax.sh: installing strax $STRAX_VERSION (--no-deps) and ${DEPS[*]}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$PY" -m pip install -q -c "$tmp/hold.txt" "${DEPS[@]}"
"$PY" -m pip install -q --no-deps "strax==$STRAX_VERSION"

# nothing held fixed has moved (strax's own pins are the only unmet requirements, on purpose)
"$PY" - "$tmp/hold.txt" <<'PYEOF'
import importlib.metadata as md, sys
moved = []
for line in open(sys.argv[1]):
    name, want = line.strip().split("==")
    try:
        got = md.version(name)
    except md.PackageNotFoundError:  # held for strata's sake, not installed for strax
        continue
    if got != want:
        moved.append(f"{name} {want} -> {got}")
if moved:
    sys.exit("install-strax.sh: installing strax's dependencies moved " + ", ".join(moved))
PYEOF
if ! strax_imports; then
    "$PY" -c "import strax, blosc, zstd, zstandard, lz4.frame, bson"
    exit 1
fi
echo "install-strax.sh: strax $STRAX_VERSION installed"

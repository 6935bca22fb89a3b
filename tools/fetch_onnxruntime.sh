#!/usr/bin/env bash
# Puts ONNX Runtime's shared library in .ort/ from ONNX Runtime's own PyPI wheel, and writes its
# path (relative to the repository root) to .ort/LIBRARY_PATH. Does nothing if it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${ONNXRUNTIME_VERSION:-1.31.1}"
dir=.ort
lib="$dir/libonnxruntime.so.$VERSION"
if [ -f "$lib" ] && [ "$(cat "$dir/LIBRARY_PATH" 2>/dev/null)" = "$lib" ]; then
  exit 0
fi
mkdir -p "$dir/wheel"
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$dir/wheel" "onnxruntime==$VERSION"
wheel=$(ls "$dir"/wheel/onnxruntime-"$VERSION"-*.whl | head -n 1)
python3 - "$wheel" "$lib" <<'PY'
import shutil, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so"))
    with z.open(name) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
echo "$lib" > "$dir/LIBRARY_PATH"
echo "ONNX Runtime $VERSION: $lib"

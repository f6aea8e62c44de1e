#!/usr/bin/env bash
# Download the Python 3.12 x86-64 wheels that the GPU machine's image lacks into .whl/ (repo
# root, git-ignored), so that benchmarks/gpu_check.py runs every stage there.
#
#     bash benchmarks/gpu_wheels.sh
#
# Run it here, on a machine with PyPI access (the GPU machine reaches no registry). The GPU
# image (Python 3.12) has jax with its CUDA plugin, flax, optax, orbax-checkpoint, numpy,
# scipy, scikit-learn, numba, torch, transformers, tokenizers, safetensors, sentencepiece,
# pyarrow, protobuf, etils, absl-py, ... (ON_IMAGE below); it lacks what the trainer's data
# path needs (grain, tensorflow-datasets, array-record and their dependencies), tensorboardX,
# and the audio stack (librosa, soundfile, soxr: no gpu_check stage needs them, they are small,
# and benchmarks/tokenize_audio.py does). Every wheel is fetched with --no-deps, so each
# dependency is named here; the script then checks that every Requires-Dist of every wheel
# (markers evaluated for CPython 3.12 on Linux x86-64, extras skipped) is met by a wheel here
# or by the image, installs the set into a scratch --target as pip would for CPython 3.12,
# and prints the wheels and their total size (the working tree that travels to the GPU
# machine is limited to 64 MiB).
#
# Versions are those installed here (`pip show`), else the fallback pinned below; a line marked
# `pinned` takes its version whatever is installed here. flax is carried although the image has
# it: flax 0.12.8 and 0.12.9 fail at `from flax import nnx` under the image's jax 0.11.2
# (google/flax#5596), and 0.12.10 or later needs Python 3.12, so this 3.11 machine cannot hold
# it. Left out:
# pyarrow (about 40 MB; on the image already, and tensorflow-datasets imports it lazily, only
# for Parquet files: jaxslm's corpus is ArrayRecord), tensorflow (tensorflow-datasets runs
# without it, as jaxslm uses it), apache-beam, mlcroissant (lazy, unused).
#
# The GPU session then names .whl in the device run's `carry` and begins its command with
#
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#         --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit;
#
# followed by `python3 benchmarks/gpu_check.py` (see its --help).
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=.whl
PYTHON=${PYTHON:-python3}

# name fallback-version [pinned] (the version installed here wins unless pinned)
PACKAGES="
flax 0.12.12 pinned
tensorflow-datasets 4.9.10
tensorflow-metadata 1.21.0
googleapis-common-protos 1.76.0
array-record 0.8.6
grain 0.2.18
portpicker 1.6.0
dm-tree 0.1.10
immutabledict 4.3.1
importlib_resources 7.1.0
promise 2.3
simple-parsing 0.1.9
docstring-parser 0.18.0
termcolor 3.3.0
toml 0.10.2
tensorboardX 2.6.5
librosa 0.11.0
soundfile 0.14.0
soxr 1.1.0
audioread 3.1.0
pooch 1.9.0
platformdirs 4.14.9
decorator 5.2.1
cffi 2.0.0
pycparser 3.0
"
# promise publishes no wheel: built here (pure Python)
BUILT="promise"

# Python packages the GPU image holds (as listed for it, 2026-11): dependencies met there.
ON_IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax
e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist
fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-ml-py onnx onnxruntime opencv-python-headless optax opt-einsum
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest python-dateutil pytorch-lightning pyyaml regex requests
rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64 --platform any)

# pip, without the warnings about this machine's unused local index folders
pip() {
  "$PYTHON" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file:\|^WARNING: Running pip as" || true; }
}

installed_version() {
  "$PYTHON" -m pip show "$1" 2>/dev/null | awk '/^Version:/ {print $2}'
}

mkdir -p "$DEST"
wanted=()
while read -r name fallback pinned; do
  [ -n "$name" ] || continue
  version=$fallback
  [ -n "$pinned" ] || version=$(installed_version "$name")
  version=${version:-$fallback}
  wanted+=("$name==$version")
  if [[ " $BUILT " == *" $name "* ]]; then
    pip wheel -q --no-deps "$name==$version" -w "$DEST"
  else
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$name==$version"
  fi
done <<<"$PACKAGES"

# One version of each: drop wheels of these packages at other versions (earlier runs), and
# check the set against every wheel's requirements.
WANTED="${wanted[*]}" ON_IMAGE="$ON_IMAGE" DEST="$DEST" "$PYTHON" - <<'EOF'
import os
import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

dest = Path(os.environ["DEST"])
wanted = dict(item.split("==") for item in os.environ["WANTED"].split())
wanted = {canonicalize_name(name): version for name, version in wanted.items()}
image = {canonicalize_name(name) for name in os.environ["ON_IMAGE"].split()}
py312 = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}
held = {}
for wheel in sorted(dest.glob("*.whl")):
    name, version, _, _ = parse_wheel_filename(wheel.name)
    if name in wanted and str(version) != wanted[name]:
        print(f"removing {wheel.name}: not the pinned {name}=={wanted[name]}")
        wheel.unlink()
        continue
    if name in held:
        sys.exit(f"two wheels of {name}: {held[name].name} and {wheel.name}; keep one")
    if name not in wanted:
        print(f"warning: {wheel.name} is not in this script's list; it travels and installs too")
    held[name] = wheel
missing = sorted(set(wanted) - set(held))
if missing:
    sys.exit(f"no wheel for {', '.join(missing)}")
problems = []
on_image = {}
for name, wheel in held.items():
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker is not None and not requirement.marker.evaluate(py312):
            continue  # an extra, or another Python / platform
        needed = canonicalize_name(requirement.name)
        if needed in image and str(requirement.specifier):
            on_image.setdefault(needed, set()).add(f"{requirement.specifier} ({name})")
        if needed in held:
            version = parse_wheel_filename(held[needed].name)[1]
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{name} needs {requirement}, the wheel here is {version}")
        elif needed not in image:
            problems.append(f"{name} needs {requirement}: neither a wheel here nor on the image")
if problems:
    sys.exit("unmet requirements:\n  " + "\n  ".join(problems))
print(f"{len(held)} wheels; every requirement is a wheel here or on the GPU image")
print("versions these wheels need of the image's packages (gpu_check's env stage prints them):")
for needed, specs in sorted(on_image.items()):
    print(f"  {needed}: {', '.join(sorted(specs))}")
print("  protobuf: >=6.31.1 (tensorflow-metadata's generated code checks it at import)")
EOF

# Install the set as the GPU machine will (CPython 3.12, x86-64), into a scratch folder.
scratch=$(mktemp -d)
pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  --target "$scratch" "$DEST"/*.whl
echo "installed into a scratch --target for CPython 3.12: $(ls "$scratch" | wc -l) entries"
rm -rf "$scratch"

ls -l "$DEST"/*.whl | awk '{printf "%10d  %s\n", $5, $NF}'
du -cb "$DEST"/*.whl | awk 'END {printf "total %.1f MiB in %s (the carried tree may hold 64 MiB)\n", $1 / 1048576, "'"$DEST"'"}'

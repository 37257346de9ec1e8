"""snapflow_ros: ament_python package (colcon build) that also installs with pip (no ROS)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "snapflow_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="One-step flow-matching robot policies (SnapFlow) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    # distill/ holds the SnapFlow training code; it installs as `snapflow_distill`.
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + ["snapflow_distill"]
    + [f"snapflow_distill.{p}" for p in find_packages(where="distill")],
    package_dir={"snapflow_distill": "distill"},
    package_data={PACKAGE: ["sim/sim_table_reference.json"]},  # what sim-demo prints beside its table
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    # Only what the pure-Python core needs; ROS comes from the ROS install (or the
    # ros-* wheels), lerobot/onnx from the extras. The full pinned set is requirements/lock.txt.
    install_requires=["numpy", "torch", "safetensors", "pyyaml"],
    extras_require={
        "lerobot": ["lerobot[pi,smolvla]==0.6.1", "transformers"],
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
        "bags": ["rosbags"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "policy_node = snapflow_ros.ros.policy_node:main",
            "distillation_server = snapflow_ros.ros.distillation_server:main",
            "sim_robot = snapflow_ros.ros.sim_robot:main",
            "snapflow = snapflow_ros.cli.main:main",
        ],
    },
)

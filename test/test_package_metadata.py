"""Package metadata: both package.xml files pass catkin_pkg validation, versions agree, and
every ROS package the code imports is declared as a dependency."""

from __future__ import annotations

from importlib.metadata import distribution

import pytest
from catkin_pkg.package import parse_package

import snapflow_ros
from conftest import REPO, top_level_imports


@pytest.mark.parametrize("path", ["package.xml", "msg/package.xml"])
def test_package_xml_is_valid_format_3(path):
    package = parse_package(REPO / path)  # raises InvalidPackage on any validation error
    assert package.package_format == 3
    assert package.maintainers and package.licenses


def test_versions_agree():
    package = parse_package(REPO / "package.xml")
    assert package.version == snapflow_ros.__version__ == distribution("snapflow_ros").version
    assert parse_package(REPO / "msg/package.xml").version == package.version


def test_build_types():
    exports = {e.tagname: e.content for e in parse_package(REPO / "package.xml").exports}
    assert exports["build_type"] == "ament_python"
    interfaces = parse_package(REPO / "msg/package.xml")
    assert {e.tagname: e.content for e in interfaces.exports}["build_type"] == "ament_cmake"
    assert "rosidl_interface_packages" in [g.name for g in interfaces.member_of_groups]


def test_every_imported_ros_package_is_declared():
    from ament_index_python.packages import get_packages_with_prefixes

    ros_packages = set(get_packages_with_prefixes()) | {"launch", "launch_ros"}
    sources = sorted((REPO / "snapflow_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    imported = set().union(*map(top_level_imports, sources)) & ros_packages
    imported.discard("snapflow_ros")
    package = parse_package(REPO / "package.xml")
    declared = {d.name for d in package.exec_depends + package.build_export_depends}
    assert imported, "the scan found no ROS imports at all: it is broken"
    assert imported <= declared, f"imported but not in package.xml: {sorted(imported - declared)}"


def test_interface_files_are_all_generated():
    cmake = (REPO / "msg/CMakeLists.txt").read_text()
    files = sorted(
        str(p.relative_to(REPO / "msg"))
        for pattern in ("msg/*.msg", "srv/*.srv", "action/*.action")
        for p in (REPO / "msg").glob(pattern)
    )
    assert files
    missing = [f for f in files if f'"{f}"' not in cmake]
    assert not missing, f"interface files not listed in msg/CMakeLists.txt: {missing}"

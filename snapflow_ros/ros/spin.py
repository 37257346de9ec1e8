"""The process around one node: init, spin, clean shutdown, a user error without a traceback."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from snapflow_ros.errors import SnapflowError


def spin_node(name: str, factory: Callable[[], Node], args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    # rclpy's MultiThreadedExecutor cost the policy node 10x in chunk rate with three 30 Hz cameras
    # (snapflow bench-node); our callbacks only store, and long work runs on the nodes' own threads.
    executor = SingleThreadedExecutor()
    try:
        node = factory()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SnapflowError as error:
        # A bad configuration or checkpoint is the user's to fix: say what, without a traceback.
        print(f"{name}: error: {error}", flush=True)
        raise SystemExit(2) from None
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()

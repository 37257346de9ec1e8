"""The process around one node: init, spin, clean shutdown, a user error without a traceback.

Ctrl-C (or SIGTERM, or another shutdown of the context) tears the node down, which cancels its
distillation jobs (their processes end with it), and exits 0 at once: at-exit handlers and stdio
flushed, the interpreter's finalisation of every module skipped (most of a second with torch
loaded), so the node is gone within a second.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import NoReturn

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from snapflow_ros.errors import SnapflowError


def spin_node(name: str, factory: Callable[[], Node], args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    stopped = False
    # rclpy's MultiThreadedExecutor cost the policy node 10x in chunk rate with three 30 Hz cameras
    # (snapflow bench-node); our callbacks only store, and long work runs on the nodes' own threads.
    executor = SingleThreadedExecutor()
    try:
        node = factory()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        stopped = True
    except SnapflowError as error:
        # A bad configuration or checkpoint is the user's to fix: say what, without a traceback.
        print(f"{name}: error: {error}", flush=True)
        raise SystemExit(2) from None
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if stopped:
        exit_now(0)


def exit_now(code: int) -> NoReturn:
    """Ends the process after its node was torn down: at-exit handlers (logging's flush among
    them) and stdio flushed, module finalisation skipped."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

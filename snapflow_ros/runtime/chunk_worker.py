"""ChunkWorker: the thread that computes chunks, off the ROS executor.

Callbacks and timers only call request(trigger); the worker wakes, takes every trigger that came
meanwhile (the period one wins, so a period is never lost to an input event) and calls
`serve(trigger)` once. An exception is reported through `on_error` and the worker goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from snapflow_ros.policy.chunk_executor import Trigger


class ChunkWorker:
    def __init__(self, serve: Callable[[Trigger], None], on_error: Callable[[Exception], None]) -> None:
        self.serve, self.on_error = serve, on_error
        self._wake, self._stop = threading.Event(), threading.Event()
        self._lock = threading.Lock()  # request() adds from callbacks, the worker takes
        self._triggers: set[Trigger] = set()
        self._thread = threading.Thread(target=self._run, name="policy_worker", daemon=True)
        self._thread.start()

    def request(self, trigger: Trigger) -> None:
        with self._lock:
            self._triggers.add(trigger)
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                triggers, self._triggers = self._triggers, set()
            if self._stop.is_set():  # checked after the clear, so stop()'s wake-up is never lost
                return
            if not triggers:
                continue
            try:
                self.serve(Trigger.PERIOD if Trigger.PERIOD in triggers else Trigger.INPUTS_COMPLETE)
            except Exception as error:  # noqa: BLE001 - never let the worker die silently
                self.on_error(error)

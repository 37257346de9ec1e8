"""ChunkWorker: triggers coalesce (the period wins), errors are reported and the worker goes on."""

import threading

from snapflow_ros.policy.chunk_executor import Trigger
from snapflow_ros.runtime.chunk_worker import ChunkWorker


def test_triggers_coalesce_errors_are_reported_and_stop_joins():
    served, errors, gate, done = [], [], threading.Event(), threading.Event()

    def serve(trigger):
        served.append(trigger)
        if len(served) == 1:
            gate.wait(5.0)  # busy: the next triggers pile up meanwhile
            raise RuntimeError("inference failed")
        done.set()

    worker = ChunkWorker(serve, errors.append)
    worker.request(Trigger.INPUTS_COMPLETE)
    while not served:
        pass
    worker.request(Trigger.INPUTS_COMPLETE)
    worker.request(Trigger.PERIOD)
    worker.request(Trigger.INPUTS_COMPLETE)
    gate.set()
    assert done.wait(5.0)
    worker.stop()
    assert served == [Trigger.INPUTS_COMPLETE, Trigger.PERIOD]  # three requests while busy: one wake-up
    assert [str(e) for e in errors] == ["inference failed"]
    assert not worker._thread.is_alive()

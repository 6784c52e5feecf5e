"""What a worker process changes about its own interpreter before it takes work."""

from __future__ import annotations

import gc

from conveyor.worker.supervisor import YOUNG_GENERATION_THRESHOLD, tune_garbage_collector


def test_worker_process_freezes_what_it_loaded_and_collects_young_objects_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

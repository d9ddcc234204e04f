"""200 incoming batches arriving at once: each registered and requested exactly once, however many copies of it
arrive and however often the sensor ticks. (Each request's drift report is tested in integration/test_end_to_end.py.)"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd
from helpers import tiny_digits


def test_two_hundred_batches_at_once_are_each_requested_exactly_once(project):
    from pipelines.instance import ensure_instance
    from pipelines.wiring import build_definitions

    project.declare(tiny_digits())
    incoming = project.root / "data" / "incoming" / "digits"
    incoming.mkdir(parents=True)
    columns = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]

    def write(index: int) -> None:
        rows = np.random.default_rng(index).integers(0, 17, (20, 64))
        frame = pd.DataFrame(rows, columns=columns)
        frame["target"] = index % 10
        frame.to_csv(incoming / f"batch-{index:03d}.csv", index=False)

    with ThreadPoolExecutor(8) as pool:  # arriving together, from several writers
        list(pool.map(write, range(200)))
    for index in range(0, 200, 10):  # 20 re-deliveries of the same bytes under other names
        (incoming / f"resent-{index:03d}.csv").write_bytes((incoming / f"batch-{index:03d}.csv").read_bytes())
    past = time.time() - 60
    for path in incoming.iterdir():
        os.utime(path, (past, past))
    for index in range(5):  # still being written: not complete yet
        (incoming / f"partial-{index}.csv").write_text("pixel_0_0,pixel_0_1\n1,")

    settings = project.settings()
    instance = ensure_instance(settings)
    defs = build_definitions(settings)
    sensor = defs.get_sensor_def("digits_incoming_batches")
    started = time.perf_counter()
    requests = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    seconds = time.perf_counter() - started

    partitions = [r.partition_key for r in requests]
    assert len(partitions) == 200 and len(set(partitions)) == 200
    assert len({r.run_key for r in requests}) == 200  # run keys: the daemon launches each request at most once
    assert not any(p.startswith("partial-") for p in partitions)
    contents = {p.rsplit("-", 1)[-1] for p in partitions}
    assert len(contents) == 200  # each content once, whichever of its names was seen first
    assert sorted(instance.get_dynamic_partitions("digits_batches")) == sorted(partitions)

    for _ in range(2):  # later ticks, the re-deliveries still in the folder: nothing new
        assert isinstance(sensor(dg.build_sensor_context(instance=instance, definitions=defs)), dg.SkipReason)
    assert len(instance.get_dynamic_partitions("digits_batches")) == 200
    assert seconds < 60, f"one tick over 200 batches took {seconds:.1f} s"  # generous: a sensor tick must not time out

"""Datasets on a local Dask cluster: a worker killed mid-run, then a resumed run, give the same
files as an uninterrupted run (arrays, STAR and tilt files, metadata table)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR

from tem_core import io as tio
from tem_core.dataset import generate_dataset, parse_dataset_spec
from tem_core.dataset import read_star as tio_star

pytestmark = pytest.mark.slow
EXAMPLE = DATA_DIR / "example_dataset.toml"


def _tilt_spec():
    """The example as 4 small tilt series (7 tilts, 96² px at 2 Å) with every output."""
    raw = tomllib.loads(EXAMPLE.read_text())
    raw["dataset"]["kind"] = "tilt_series"
    raw["grid"]["shape_px"] = [96, 96]
    raw["grid"]["pixel_size_a"] = 2.0  # PSF at 1.1 µm defocus within half the field
    raw["tilt"] = {"scheme": "dose-symmetric", "min_deg": -30.0, "max_deg": 30.0, "step_deg": 10.0}
    raw["outputs"]["potential_volume"] = True
    return parse_dataset_spec(raw, source=EXAMPLE)


def _same_files(a: Path, b: Path) -> list[str]:
    """Compare every file of two dataset folders; MRC files by array and pixel size (their
    header labels carry a time stamp), the rest byte for byte. Returns the files compared."""
    names = sorted(
        str(p.relative_to(a)) for p in a.rglob("*") if p.is_file() and p.parent.name != "records"
    )
    other = sorted(
        str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and p.parent.name != "records"
    )
    assert names == other
    for name in names:
        if name == "manifest.json":  # holds each file's SHA-256, header included: compared below
            continue
        if name.endswith(".mrc"):
            (x, sx), (y, sy) = tio.read_mrc(a / name), tio.read_mrc(b / name)
            assert sx == sy and x.shape == y.shape and np.array_equal(x, y), name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma["items"].keys() == mb["items"].keys()
    for item in ma["items"]:
        assert ma["items"][item]["settings_hash"] == mb["items"][item]["settings_hash"]
    return names


def test_killed_worker_and_resume_give_the_files_of_an_uninterrupted_run(tmp_path) -> None:
    import dask
    from distributed import Client, LocalCluster

    spec = _tilt_spec()
    reference = generate_dataset(spec, tmp_path / "ref", workers=0, progress=False)
    assert reference.completed == (0, 1, 2, 3)

    run = tmp_path / "run"
    # no retries: the item whose worker dies is reported as failed (and redone on resume);
    # one item per worker at a time (as generate_dataset's own clusters), so one item is lost
    config = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(config):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=50,
        )
        client = Client(cluster)
        try:
            outcome: dict = {}
            thread = threading.Thread(
                target=lambda: outcome.update(
                    report=generate_dataset(
                        spec,
                        run,
                        scheduler=cluster.scheduler_address,
                        progress=False,
                        log=lambda m: None,
                    )
                )
            )
            thread.start()
            pids = client.run(os.getpid)
            victim, deadline = None, time.monotonic() + 120
            while victim is None and time.monotonic() < deadline:
                busy = client.run(lambda dask_worker: len(dask_worker.state.executing))
                victim = next((w for w, n in busy.items() if n), None)
                if victim is None:
                    time.sleep(0.02)
            assert victim is not None, "no worker ever ran an item"
            os.kill(pids[victim], signal.SIGKILL)
            thread.join(timeout=300)
        finally:
            client.close()
            cluster.close()
    first = outcome["report"]
    assert len(first.failed) == 1, first.failed
    lost = first.failed[0]["index"]
    assert "KilledWorker" in first.failed[0]["error"]
    assert first.failed[0]["parameters"]["index"] == lost
    assert (run / "failures.json").is_file()
    assert sorted(first.completed) == [i for i in range(4) if i != lost]

    resumed = generate_dataset(spec, run, workers=2, progress=False, log=lambda m: None)
    assert resumed.completed == (lost,) and resumed.skipped == first.completed
    assert resumed.ok and not (run / "failures.json").exists()
    # the local cluster shares the cores: torch threads per worker = cores // 2 workers
    record = json.loads((run / f"records/item_{lost:06d}.json").read_text())
    assert record["run"]["torch_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    compared = _same_files(tmp_path / "ref", run)
    assert "metadata.csv" in compared and "tilt_series/item_000003.tlt" in compared
    assert "potential/item_000000.mrc" in compared and "particles/item_000002.star" in compared
    stack, _ = tio.read_mrc(run / "tilt_series/item_000000.mrc")
    assert stack.shape == (7, 96, 96)
    starfile = pytest.importorskip("starfile")  # an independent parser (the dev extra)
    table = starfile.read(run / "particles/item_000002.star", always_dict=True)["particles"]
    ours = tio_star(run / "particles/item_000002.star")["particles"]
    assert list(table.columns) == list(ours)
    assert {"rlnCoordinateZ", "rlnTomoName"} <= set(table.columns)
    assert set(table["rlnTomoName"]) == {"tilt_series/item_000002.mrc"}
    np.testing.assert_allclose(
        table["rlnCoordinateZ"].to_numpy(), np.array(ours["rlnCoordinateZ"], dtype=float)
    )


def test_local_cluster_serves_the_dashboard_with_bokeh_and_runs_without(
    tmp_path, monkeypatch
) -> None:
    """With bokeh (the dashboard extra) the local cluster's dashboard answers over HTTP;
    without it the same run completes and reports the dashboard as off."""
    import urllib.request

    from distributed import Client

    from tem_core.dataset.run import _local_cluster

    pytest.importorskip("bokeh")
    cluster = _local_cluster(1, 1, 0)
    try:
        with Client(cluster) as client:
            link = client.dashboard_link
            with urllib.request.urlopen(link, timeout=60) as response:  # localhost only
                assert response.status == 200 and b"bokeh" in response.read().lower()
    finally:
        cluster.close()

    raw = tomllib.loads(EXAMPLE.read_text())
    raw["dataset"]["items"] = 1
    spec = parse_dataset_spec(raw, source=EXAMPLE)
    monkeypatch.setitem(sys.modules, "bokeh", None)  # as if bokeh were not installed
    messages: list[str] = []
    report = generate_dataset(spec, tmp_path / "no_bokeh", workers=1, log=messages.append)
    assert report.ok and report.completed == (0,) and report.dashboard is None
    assert any("dashboard: off (needs bokeh)" in m for m in messages), messages

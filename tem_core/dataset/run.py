"""Run a dataset: one task per item on Dask (a local cluster by default), resumable.

* ``workers=0``: a plain loop in this process (no Dask; the reference and the baseline).
* default: a :class:`distributed.LocalCluster` of worker processes with one thread each; every
  worker sets its torch and Taichi CPU threads to ``cores // workers`` before it imports
  anything heavy, so the machine is not oversubscribed.
* ``scheduler="tcp://host:8786"``: the same tasks on an existing cluster (whose workers must
  see ``out``, e.g. a shared file system, and the structure files).

A worker with a CUDA device uses it when ``dataset.device`` is ``"auto"`` (or ``"cuda"``).
Items then need the resource ``GPU=1``, so a worker runs one item per GPU at a time: a local
cluster on a GPU machine gets one worker per GPU, each pinned to its device; workers of an
existing cluster advertise it with ``dask worker --resources GPU=1`` (one worker per GPU,
e.g. ``dask-cuda-worker``).

Resuming: before submitting, each item's record (``records/<item>.json``) is checked against
the item's settings hash and every file's SHA-256; only items whose record matches are skipped.
A failed item (an exception, or a worker that died) is reported with its traceback and
parameters in ``failures.json`` while the others finish; a later run retries it.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from distributed import WorkerPlugin

from tem_core.dataset.item import (
    _write_json,
    generate_item,
    item_name,
    item_parameters,
    record_is_current,
    static_settings,
)
from tem_core.dataset.spec import DatasetSpec, load_dataset_spec
from tem_core.io.files import atomic_write
from tem_core.memory import map_large_allocations
from tem_core.validation import require_integer

__all__ = ["DatasetReport", "generate_dataset", "metadata_rows"]


@dataclass(frozen=True, kw_only=True)
class DatasetReport:
    """Outcome of :func:`generate_dataset`."""

    out: Path
    completed: tuple[int, ...]
    skipped: tuple[int, ...]
    failed: tuple[dict[str, Any], ...]
    seconds: float
    workers: int
    dashboard: str | None = None
    tables: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _run_item(spec: DatasetSpec, index: int, out: str) -> dict[str, Any]:
    """Worker task: generate one item; an exception becomes a failure record."""
    device = spec["dataset.device"]
    try:
        from distributed import get_worker

        worker = get_worker()
        gpu = getattr(worker, "tem_core_device", None)
        if gpu is not None and device in ("auto", "cuda"):
            device = gpu
    except (ImportError, ValueError):
        pass
    try:
        return {"ok": True, "record": generate_item(spec, index, out, device=device)}
    except Exception as exc:  # noqa: BLE001 - reported with its traceback, others go on
        return {
            "ok": False,
            "index": index,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }


class _ThreadLimits(WorkerPlugin):
    """Dask worker plugin: torch / Taichi CPU threads and the worker's CUDA device."""

    name = "tem-core-threads"

    def __init__(self, threads: int | None = None, host_threads: dict | None = None) -> None:
        self.threads = threads
        self.host_threads = host_threads or {}  # task threads of all workers on each host

    def setup(self, worker) -> None:
        # the cores of this host shared by every task thread of every worker on it
        sharing = self.host_threads.get(_host(worker.address), worker.state.nthreads)
        threads = self.threads or max(1, _cpu_count() // max(1, sharing))
        os.environ.setdefault("TI_CPU_MAX_NUM_THREADS", str(threads))
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        torch.set_num_threads(threads)
        map_large_allocations()  # the worker's process: resident memory follows the arrays
        if torch.cuda.is_available():
            try:  # LocalCluster names workers 0, 1, ...: worker i uses GPU i % n
                slot = int(worker.name)
            except (TypeError, ValueError):
                slot = 0
            worker.tem_core_device = f"cuda:{slot % torch.cuda.device_count()}"


def _host(address: str) -> str:
    """``tcp://10.0.0.5:41234`` -> ``10.0.0.5``."""
    return address.split("://")[-1].rsplit(":", 1)[0]


def _threads_per_host(client) -> dict[str, int]:
    counts: dict[str, int] = {}
    for address, info in client.scheduler_info().get("workers", {}).items():
        counts[_host(address)] = counts.get(_host(address), 0) + int(info.get("nthreads", 1))
    return counts


def _has_bokeh() -> bool:
    """Dask's dashboard needs bokeh (``pip install bokeh``); without it none is served."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _local_cluster(workers: int, threads: int, gpus: int):
    import dask
    from distributed import LocalCluster

    env = {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TI_CPU_MAX_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    # items are long: a worker holds only the item it runs (no prefetched queue that a dying
    # worker would take down with it)
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port; the dashboard itself needs bokeh
            env=env,
            resources={"GPU": 1} if gpus else None,
            silence_logs=40,
        )


def _uses_gpu_resources(client, spec: DatasetSpec) -> bool:
    if spec["dataset.device"] == "cpu":
        return False
    info = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU", 0) >= 1 for w in info.values())


def metadata_rows(spec: DatasetSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished item: index, name, files, every drawn parameter and seed."""
    rows = []
    for rec in sorted(records, key=lambda r: r["index"]):
        row = {"index": rec["index"], "name": rec["name"]}
        row.update({f"file.{role}": f["path"] for role, f in sorted(rec["files"].items())})
        params = rec["parameters"]  # sorted: the same columns from memory or from JSON
        row.update({k: params[k] for k in sorted(params) if k not in ("index", "name")})
        row["n_particles"] = rec["n_particles"]
        row["n_atoms"] = rec["n_atoms"]
        row["detector_dqe"] = rec["detector_dqe"]  # drawn, or the camera's published DQE(0)
        row["image_data_sha256"] = rec["image_data_sha256"]
        row["settings_hash"] = rec["settings_hash"]
        rows.append(row)
    return rows


def _write_tables(spec: DatasetSpec, out: Path, records: list[dict[str, Any]]) -> dict[str, Path]:
    rows = metadata_rows(spec, records)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    text = buffer.getvalue()
    paths = {
        "csv": atomic_write(
            out / "metadata.csv",
            lambda tmp: tmp.write_text(text, encoding="utf-8"),
            overwrite=True,
        ),
        "json": _write_json(out / "metadata.json", {"dataset": spec.name, "items": rows}),
    }
    try:  # the `parquet` extra
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        # a table from an earlier run with pyarrow would no longer match the CSV and JSON
        (out / "metadata.parquet").unlink(missing_ok=True)
        return paths
    # every row with every column (from_pylist takes the schema from the first row), a
    # column of ints and floats (a drawn `choice` of both) as float64
    full = [{k: row.get(k) for k in columns} for row in rows]
    schema = []
    for k in columns:
        values = [r[k] for r in full if r[k] is not None]
        kinds = {type(v) for v in values}
        if kinds and kinds <= {int, float} and float in kinds:
            schema.append(pa.field(k, pa.float64()))
        else:
            schema.append(pa.field(k, pa.array(values).type if values else pa.null()))
    table = pa.Table.from_pylist(full, schema=pa.schema(schema))
    paths["parquet"] = atomic_write(
        out / "metadata.parquet", lambda tmp: pq.write_table(table, tmp), overwrite=True
    )
    return paths


def _write_manifest(spec: DatasetSpec, out: Path, records: dict[int, dict[str, Any]]) -> None:
    manifest = {
        "dataset": spec.name,
        "static": static_settings(spec),
        "items": {
            item_name(i): {"settings_hash": r["settings_hash"], "files": r["files"]}
            for i, r in sorted(records.items())
        },
    }
    _write_json(out / "manifest.json", manifest)


def _failure(spec: DatasetSpec, index: int, error: str, tb: str) -> dict[str, Any]:
    return {
        "index": index,
        "name": item_name(index),
        "error": error,
        "traceback": tb,
        "parameters": item_parameters(spec, index),
    }


def generate_dataset(
    spec: DatasetSpec | str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int | None = None,
    progress: bool = True,
    log=None,
) -> DatasetReport:
    """Generate every item of ``spec`` under ``out``, skipping items already finished.

    Parameters
    ----------
    spec
        A :class:`DatasetSpec` or the path of a dataset TOML.
    out
        Output folder (created). Layout: ``micrographs/`` or ``tilt_series/``,
        ``noise_free/``, ``particles/``, ``potential/``, ``records/``, ``manifest.json``,
        ``metadata.csv``/``.json`` (and ``metadata.parquet`` where pyarrow is installed:
        the ``parquet`` extra), ``failures.json`` (only when items failed).
    workers
        ``0``: a plain loop in this process; ``None``: a local cluster with one worker per
        core (one per GPU on a GPU machine); ``n``: a local cluster of ``n`` workers. Ignored
        with ``scheduler``.
    scheduler
        Address of an existing Dask scheduler (``tcp://host:8786``), or a
        ``distributed.Client`` already connected.
    threads_per_worker
        torch / Taichi CPU threads per worker; default ``cores // workers``.
    progress
        Show a progress bar (tqdm) and print the dashboard link (a local cluster serves
        Dask's dashboard only where bokeh is installed, the ``dashboard`` extra; without
        it the run goes on and says "dashboard: off (needs bokeh)").
    """
    t0 = time.perf_counter()
    if not isinstance(spec, DatasetSpec):
        spec = load_dataset_spec(spec)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"output folder {out} cannot be created: {exc}") from exc
    log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
    if workers is not None:
        require_integer("workers", workers, minimum=0)
    records: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for index in range(spec.n_items):
        record = record_is_current(spec, index, out)
        if record is None:
            todo.append(index)
        else:
            records[index] = record
    skipped = tuple(sorted(records))
    failed: list[dict[str, Any]] = []
    dashboard = None
    n_workers = 0
    if todo and scheduler is None and workers == 0:
        for index in _progress(todo, progress):
            result = _run_item(spec, index, str(out))
            _collect(spec, result, index, records, failed)
    elif todo:
        from distributed import Client, as_completed

        cluster = None
        if scheduler is None:
            gpus = torch.cuda.device_count() if spec["dataset.device"] != "cpu" else 0
            n_workers = workers or gpus or _cpu_count()
            if gpus and n_workers > gpus:  # one item per GPU at a time
                log(f"{n_workers} workers asked for, {gpus} GPU(s): one worker per GPU")
                n_workers = gpus
            threads = threads_per_worker or max(1, _cpu_count() // n_workers)
            cluster = _local_cluster(n_workers, threads, gpus)
            client = Client(cluster)
        elif isinstance(scheduler, str):
            client = Client(scheduler)
        else:
            client = scheduler
        try:
            client.register_plugin(_ThreadLimits(threads_per_worker, _threads_per_host(client)))
            n_workers = len(client.scheduler_info().get("workers", {}))
            dashboard = client.dashboard_link if cluster is None or _has_bokeh() else None
            if progress:
                log(f"dask: {n_workers} workers, dashboard: {dashboard or 'off (needs bokeh)'}")
            resources = {"GPU": 1} if _uses_gpu_resources(client, spec) else None
            pending = list(reversed(todo))
            futures: dict[Any, int] = {}

            def submit() -> Any:
                index = pending.pop()
                future = client.submit(
                    _run_item,
                    spec,
                    index,
                    str(out),
                    key=f"{item_name(index)}-{spec.seed}",
                    pure=False,
                    resources=resources,
                )
                futures[future] = index
                return future

            # a window of one item per worker thread: a worker that dies takes down only the
            # item it runs, never a queue of items assigned to it in advance
            window = max(1, sum(client.nthreads().values()))
            stream = as_completed([submit() for _ in range(min(window, len(pending)))])
            for future in _progress(stream, progress, total=len(todo)):
                index = futures.pop(future)
                if pending:
                    stream.add(submit())
                if future.status == "error":
                    exc = future.exception()
                    tb = (
                        "".join(traceback.format_tb(future.traceback()))
                        if future.traceback()
                        else ""
                    )
                    failed.append(_failure(spec, index, f"{type(exc).__name__}: {exc}", tb))
                else:
                    _collect(spec, future.result(), index, records, failed)
        finally:
            if cluster is not None:
                client.close()
                cluster.close()
            elif isinstance(scheduler, str):
                client.close()
    _write_manifest(spec, out, records)
    tables = _write_tables(spec, out, list(records.values()))
    failures_path = out / "failures.json"
    if failed:
        _write_json(failures_path, sorted(failed, key=lambda f: f["index"]))
        for f in failed:
            log(f"item {f['index']} failed: {f['error']} (details in {failures_path})")
    elif failures_path.exists():
        failures_path.unlink()
    completed = tuple(sorted(set(records) - set(skipped)))
    return DatasetReport(
        out=out,
        completed=completed,
        skipped=skipped,
        failed=tuple(failed),
        seconds=time.perf_counter() - t0,
        workers=n_workers,
        dashboard=dashboard,
        tables=tables,
    )


def _collect(spec, result, index, records, failed) -> None:
    if result["ok"]:
        records[index] = result["record"]
    else:
        failed.append(_failure(spec, index, result["error"], result["traceback"]))


def _progress(iterable, enabled: bool, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="items", disable=not enabled, unit="item")

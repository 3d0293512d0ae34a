"""Benchmark: saving and verifying a checkpoint of more than 1 GB with 2 CPU ranks (gloo,
ZeRO-2), before and after the checkpoints were made durable and parallel, against the disk's
own sequential write bandwidth measured in the same run.

    .venv/bin/python -m tests.benchmarks.checkpoint_io [--gigabytes 1.0] [--repeats 6]

Three ways to save the same engine, in rotating order each repeat:
- "deepspeed": `engine.save_checkpoint` alone (page cache, no manifest, no fsync): the floor
  for anything built on DeepSpeed's save.
- "before": trainer/trainkube_trainer/checkpoints.py as it was at commit BEFORE, read from git
  into a temporary folder and imported from there: the ranks write their shards, then rank 0
  alone hashes every file and publishes; on resume rank 0 alone re-hashes everything. Its save
  ends before the data is on the disk, so it is also timed with rank 0 then fsyncing every
  file ("before, then fsync"): the durability "after" has.
- "after": the current CheckpointManager.
Verification (finding the newest good checkpoint, as a resume does) is timed cold (every file
fsynced and dropped from the page cache with posix_fadvise first) and warm.

The disk's reference, before each repeat: one process writing as many bytes as a checkpoint
holds, 16 MiB at a time (random bytes), then fsync. Not `dd if=/dev/zero`: this VM's disk
handles zeros differently (dd gave 390 to 1,440 MB/s back to back while random data gave a
steady 1,500 MB/s).

Prints a table and writes tests/benchmarks/results/checkpoint-io.json. Numbers, not
assertions: they move with the machine and whatever else runs on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tests.ports import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint-io.json"
REPO = Path(__file__).resolve().parents[2]
BEFORE = "176540a29ddd8e8e20f78d4ba69b032f1d025680"  # the parent of the change
OLD_MODULE = "trainer/trainkube_trainer/checkpoints.py"
HIDDEN = 4096  # each layer: a 4096 x 4096 Linear, 16.8 M parameters
BYTES_PER_PARAMETER = 16  # fp32 weights (model states) + fp32 master, exp_avg, exp_avg_sq
MB = 1e6


def disk_write(path: Path, blocks: int) -> None:
    """Write `blocks` x 16 MiB of random bytes to `path`, then fsync (the disk's reference)."""
    block = os.urandom(16 << 20)
    with path.open("wb") as handle:
        for _ in range(blocks):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def evict(folder: Path) -> None:
    """Put every file under `folder` on the disk and drop it from the page cache."""
    for path in _files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def fsync_all(folder: Path) -> None:
    for path in [*_files(folder), *(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_before(folder: Path) -> Path:
    """checkpoints.py as it was at BEFORE, copied into `folder` from git."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:{OLD_MODULE}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / "checkpoints_before.py"
    path.write_text(source)
    return path


def import_before(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("checkpoints_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    torch.distributed.barrier()
    started = time.monotonic()
    value = action()
    torch.distributed.barrier()
    return time.monotonic() - started, value


def _engine(layers: int) -> Any:
    import deepspeed  # noqa: PLC0415

    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(HIDDEN, HIDDEN) for _ in range(layers)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    config = {
        "train_batch_size": 2,
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": 2},
        "zero_force_ds_cpu_optimizer": False,
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    loss = engine(torch.randn(1, HIDDEN)).pow(2).mean()  # one step: Adam's states exist
    engine.backward(loss)
    engine.step()
    return engine


def _old_resume(manager: Any, is_main: bool) -> Any:
    """How the trainer resumed before: rank 0 verifies everything, then tells the others."""
    from trainkube_trainer.distributed import broadcast  # noqa: PLC0415

    return broadcast(manager.newest_valid() if is_main else None)


def _on_main(action: Callable[[], None], is_main: bool) -> None:
    if is_main:
        action()


def measure(manager: Any, engine: Any, folder: Path, *, step: int, old: bool) -> dict[str, Any]:
    """Save step `step` with `manager`, then find and verify it cold and warm (all ranks)."""
    is_main = torch.distributed.get_rank() == 0
    info = {"step": step, "worldSize": torch.distributed.get_world_size()}
    seconds, manifest = _timed(partial(manager.save, engine, step=step, info=info))
    published = folder / f"step-{step}"
    row = {"bytes": manifest["bytes"] if manifest else 0, "saveSeconds": round(seconds, 3)}
    if old:  # what the old save needs to be as durable as the new one
        synced, _ = _timed(partial(_on_main, partial(fsync_all, published), is_main))
        row["saveThenFsyncSeconds"] = round(seconds + synced, 3)
    for cache in ("Cold", "Warm"):
        if cache == "Cold":
            _on_main(partial(evict, published), is_main)
        find = partial(_old_resume, manager, is_main) if old else manager.newest_valid
        seconds, (found, _) = _timed(find)
        assert found is not None
        assert found.step == step
        row[f"verify{cache}Seconds"] = round(seconds, 3)
    return row


def measure_deepspeed(engine: Any, folder: Path) -> dict[str, Any]:
    """DeepSpeed's save_checkpoint alone."""
    seconds, _ = _timed(partial(engine.save_checkpoint, str(folder), tag="ds"))
    size = sum(p.stat().st_size for p in _files(folder))
    return {"bytes": size, "saveSeconds": round(seconds, 3)}


def worker(args: argparse.Namespace) -> None:
    from trainkube_trainer.checkpoints import CheckpointManager  # noqa: PLC0415
    from trainkube_trainer.distributed import start  # noqa: PLC0415

    env = start()
    root = Path(args.directory)
    before = import_before(root / "checkpoints_before.py")
    engine = _engine(args.layers)
    sides = ["deepspeed", "before", "after"]
    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        # The disk's reference in the same minute as the saves it is compared with.
        reference = partial(disk_write, root / "disk.bin", args.blocks)
        disk, _ = _timed(partial(_on_main, reference, env.is_main))
        row: dict[str, Any] = {"diskMBps": round(args.blocks * (16 << 20) / MB / disk)}
        if env.is_main:
            (root / "disk.bin").unlink()
        for name in sides[repeat % 3 :] + sides[: repeat % 3]:
            time.sleep(2)  # let the disk settle after the previous side's writes
            if name == "deepspeed":
                row[name] = measure_deepspeed(engine, root / name)
            else:
                manager_class = before.CheckpointManager if name == "before" else CheckpointManager
                manager = manager_class(root / name, rank=env.rank, keep_last=1, keep_every=0)
                row[name] = measure(
                    manager, engine, root / name, step=repeat + 1, old=name == "before"
                )
            row[name]["fractionOfDisk"] = round(
                row[name]["bytes"] / MB / row[name]["saveSeconds"] / row["diskMBps"], 2
            )
            torch.distributed.barrier()
            if env.is_main:
                fsync_all(root / name)  # leave no dirty data for the next side
                shutil.rmtree(root / name)
        if env.is_main:
            print(json.dumps(row), flush=True)
            rows.append(row)
    if env.is_main:
        (root / "worker.json").write_text(json.dumps(rows))


def _median(rows: list[dict[str, Any]], side: str, key: str) -> float:
    return round(float(statistics.median(r[side][key] for r in rows)), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=1.0, help="checkpoint size at least")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--directory", help="where to write (default: a folder under /tmp)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    layers = math.ceil(args.gigabytes * 1e9 / (BYTES_PER_PARAMETER * HIDDEN * (HIDDEN + 1)))
    # The disk reference writes as much as a checkpoint holds.
    blocks = math.ceil(layers * HIDDEN * (HIDDEN + 1) * BYTES_PER_PARAMETER / (16 << 20))
    root = Path(tempfile.mkdtemp(prefix="checkpoint-io-", dir=args.directory))
    pressure_at_start = _io_pressure()
    try:
        write_before(root)
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "-m",
            "tests.benchmarks.checkpoint_io",
            "--worker",
            f"--layers={layers}",
            f"--blocks={blocks}",
            f"--repeats={args.repeats}",
            f"--directory={root}",
        ]
        from tests.trainer.runs import EXTENSIONS  # noqa: PLC0415

        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "TORCH_EXTENSIONS_DIR": str(EXTENSIONS / "torch_extensions"),
        }
        subprocess.run(command, cwd=REPO, env=env, check=True)
        rows = json.loads((root / "worker.json").read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    size = rows[0]["after"]["bytes"]
    disk_mbs = statistics.median(r["diskMBps"] for r in rows)
    summary: dict[str, Any] = {"diskMBps": round(disk_mbs)}
    for side in ("deepspeed", "before", "after"):
        save = _median(rows, side, "saveSeconds")
        summary[side] = {
            "saveSeconds": save,
            "saveMBps": round(size / MB / save),
            "saveFractionOfDisk": _median(rows, side, "fractionOfDisk"),
        }
        if side != "deepspeed":
            summary[side]["verifyColdSeconds"] = _median(rows, side, "verifyColdSeconds")
            summary[side]["verifyWarmSeconds"] = _median(rows, side, "verifyWarmSeconds")
    synced = _median(rows, "before", "saveThenFsyncSeconds")
    summary["before"]["saveThenFsyncSeconds"] = synced
    summary["before"]["saveThenFsyncMBps"] = round(size / MB / synced)
    report = {
        "what": f"ZeRO-2 checkpoint of {layers} Linear({HIDDEN}, {HIDDEN}) layers "
        f"({size / 1e9:.2f} GB: model states + AdamW states), 2 CPU ranks (gloo); "
        f"medians of {args.repeats} repeats, each with its own disk reference "
        f"({blocks} x 16 MiB of random bytes, then fsync); before = checkpoints.py at "
        f"{BEFORE[:7]}; deepspeed = save_checkpoint alone (no hashing, no fsync)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work: "
        f"load average {os.getloadavg()[0]:.1f} at the end, "
        f"io pressure (some avg60) {pressure_at_start} at the start, {_io_pressure()} at the end",
        "torch": torch.__version__,
        "checkpointBytes": size,
        "summary": summary,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"checkpoint {size / 1e9:.2f} GB, disk {disk_mbs:.0f} MB/s (one writer, fsync)")
    print(f"{'':>10} {'save s':>7} {'MB/s':>6} {'of disk':>7} {'verify cold':>11} {'warm':>6}")
    for side in ("deepspeed", "before", "after"):
        s = summary[side]
        verify = (
            f" {s['verifyColdSeconds']:>11.2f} {s['verifyWarmSeconds']:>6.2f}"
            if "verifyColdSeconds" in s
            else ""
        )
        print(
            f"{side:>10} {s['saveSeconds']:>7.2f} {s['saveMBps']:>6} {s['saveFractionOfDisk']:>7}"
            + verify
        )
    print(f"before, then fsync of every file: {synced:.2f} s, {size / MB / synced:.0f} MB/s")


def _io_pressure() -> str:
    """The kernel's I/O pressure (share of time some task waited on I/O), if it reports it."""
    try:
        line = Path("/proc/pressure/io").read_text().splitlines()[0]
    except OSError:
        return "unknown"
    return line.split()[2].removeprefix("avg60=") + "%"


if __name__ == "__main__":
    main()

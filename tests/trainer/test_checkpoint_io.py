"""Checkpoints as two real ranks write and verify them: each rank hashes and fsyncs the files
it wrote, rank 0 publishes a manifest naming both ranks' files, and on resume each rank checks
its own files, so a shard truncated after publishing is refused and the previous step used.

One run crashes after step 30 (checkpoints every 10 steps) with every fsync recorded (the
`fsync_spy` hook); then rank 1's optimizer shard of step 30 is cut in half, a half-written
`.step-25.partial` is left beside it, and the job resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.runs import Outcome, pretrain_config, run
from trainkube.exitcodes import ExitCode
from trainkube.runconfig import Fault
from trainkube_trainer.manifest import verify

SPY = Path(__file__).resolve().parent / "fsync_spy"
RANK1_SHARD = "ds/zero_pp_rank_1_mp_rank_00_optim_states.pt"


@dataclass(frozen=True)
class Crashed:
    outcome: Outcome
    ckpt: Path
    manifest20: dict[str, Any]  # as published, before the resume rewrites anything
    fsyncs: list[dict[str, Any]]  # in call order: {"rank": "0"|"1"|None, "path": ...}


def _events(log: str, kind: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and f'"event": "{kind}"' in line
    ]


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Crashed:
    root = tmp_path_factory.mktemp("checkpoint-io")
    spy_log = root / "fsyncs.jsonl"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join([str(SPY), os.environ.get("PYTHONPATH", "")]))
        env.setenv("TRAINKUBE_TEST_FSYNC_LOG", str(spy_log))
        config = pretrain_config(root, steps=40, interval=10, fault=Fault(crash_after_step=30))
        outcome = run(config, root)
    assert outcome.exit_code == ExitCode.FAILED, outcome.log[-3000:]
    ckpt = root / "ckpt"
    manifest = json.loads((ckpt / "step-20" / "manifest.json").read_text())
    fsyncs = [json.loads(line) for line in spy_log.read_text().splitlines()]
    return Crashed(outcome, ckpt, manifest, fsyncs)


@pytest.fixture(scope="module")
def resumed(crashed: Crashed) -> Outcome:
    shard = crashed.ckpt / "step-30" / RANK1_SHARD
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    # What a save killed half-way leaves behind.
    (crashed.ckpt / ".step-25.partial" / "ds").mkdir(parents=True)
    (crashed.ckpt / ".step-25.partial" / "ds" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    root = crashed.ckpt.parent
    return run(pretrain_config(root, steps=40, interval=10), root)


def test_each_rank_hashes_the_files_it_wrote_and_the_manifest_names_both(
    crashed: Crashed,
) -> None:
    files = crashed.manifest20["files"]
    by_rank = {r: sorted(n for n, f in files.items() if f["rank"] == r) for r in (0, 1)}
    assert RANK1_SHARD in by_rank[1]
    assert "rng-rank1.pt" in by_rank[1]
    assert {"ds/mp_rank_00_model_states.pt", "latest", "zero_to_fp32.py"} <= set(by_rank[0])
    # What each rank's own process logged having hashed is what the manifest says it hashed.
    hashed = {
        e["rank"]: e for e in _events(crashed.outcome.log, "checkpointHashed") if e["step"] == 20
    }
    for rank in (0, 1):
        assert sorted(hashed[rank]["files"]) == by_rank[rank]
        assert hashed[rank]["bytes"] == sum(files[n]["bytes"] for n in by_rank[rank])
    # Digests taken while writing are the digests of the bytes on disk.
    for name, entry in files.items():
        data = (crashed.ckpt / "step-20" / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"])


def test_every_file_is_fsynced_by_its_writer_then_the_folders_then_the_rename(
    crashed: Crashed,
) -> None:
    partial, files = crashed.ckpt / ".step-20.partial", crashed.manifest20["files"]
    synced_by: dict[str, set[str | None]] = {}
    for call in crashed.fsyncs:
        synced_by.setdefault(call["path"], set()).add(call["rank"])
    for name, entry in files.items():
        assert synced_by.get(str(partial / name)) == {str(entry["rank"])}, name
    assert synced_by.get(str(partial / "manifest.json")) == {"0"}
    # Each rank syncs the folders naming its files once the files themselves are synced.
    for rank in (0, 1):
        calls = [c["path"] for c in crashed.fsyncs if c["rank"] == str(rank)]
        own = [calls.index(str(partial / n)) for n, f in files.items() if f["rank"] == rank]
        assert max(own) < calls.index(str(partial / "ds"))
        assert max(own) < calls.index(str(partial))
    # Rank 0, in order: the manifest, the folder that names it, the rename's parent.
    rank0 = [c["path"] for c in crashed.fsyncs if c["rank"] == "0"]
    manifest_at = rank0.index(str(partial / "manifest.json"))
    assert rank0[manifest_at + 1 : manifest_at + 3] == [str(partial), str(crashed.ckpt)]


def test_a_truncated_shard_is_refused_on_resume_and_the_previous_checkpoint_used(
    resumed: Outcome,
) -> None:
    assert resumed.exit_code == ExitCode.SUCCESS, resumed.log[-3000:]
    [skipped] = _events(resumed.log, "checkpointSkipped")
    assert skipped["step"] == 30
    assert f"{RANK1_SHARD} does not match its checksum" in skipped["reason"]
    assert "checked by rank 1" in skipped["reason"]
    assert '"event": "resumed", "step": 20, "fromCheckpoint": "step-20"' in resumed.log
    assert resumed.result["step"] == 40


def test_on_resume_each_rank_verifies_the_files_it_wrote(
    crashed: Crashed, resumed: Outcome
) -> None:
    verified = {(e["step"], e["rank"]): e for e in _events(resumed.log, "checkpointVerified")}
    assert set(verified) == {(30, 0), (30, 1), (20, 0), (20, 1)}
    files = crashed.manifest20["files"]
    for rank in (0, 1):
        assert verified[20, rank]["files"] == sorted(
            n for n, f in files.items() if f["rank"] == rank
        )
        assert verified[20, rank]["problem"] is None
    assert verified[30, 0]["problem"] is None
    assert verified[30, 1]["problem"].startswith(f"{RANK1_SHARD} does not match its checksum")


def test_a_refused_step_saved_again_is_replaced_by_a_good_one(
    crashed: Crashed, resumed: Outcome
) -> None:
    assert resumed.exit_code == ExitCode.SUCCESS, resumed.log[-3000:]
    manifest, why = verify(crashed.ckpt / "step-30")
    assert manifest is not None, why
    assert manifest["files"][RANK1_SHARD]["rank"] == 1
    assert not (crashed.ckpt / ".step-30.replaced").exists()


def test_folders_left_by_a_crashed_save_are_removed_and_never_resumed_from(
    crashed: Crashed, resumed: Outcome
) -> None:
    assert resumed.exit_code == ExitCode.SUCCESS, resumed.log[-3000:]
    assert "step-25" not in resumed.log
    assert sorted(p.name for p in crashed.ckpt.iterdir()) == ["step-20", "step-30", "step-40"]

"""The manifest's pure parts: every file accounted to exactly one writer, each rank's share
of the verification, and what a damaged file is reported as."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainkube_trainer.digests import FileDigest
from trainkube_trainer.manifest import (
    UnaccountedFilesError,
    account,
    assigned,
    check,
    listing,
    read_manifest,
    verify,
    write_manifest,
)


def _digest(name: str, rank: int, size: int = 1) -> FileDigest:
    return FileDigest(name, "0" * 64, size, rank)


RANK0 = [_digest("ds/mp_rank_00_model_states.pt", 0), _digest("latest", 0)]
RANK1 = [_digest("ds/zero_pp_rank_1_mp_rank_00_optim_states.pt", 1)]


def test_account_takes_each_file_from_the_rank_that_wrote_it() -> None:
    present = [d.name for d in RANK0 + RANK1]
    digests = account(present, [RANK0, RANK1])
    assert {d.name: d.rank for d in digests} == {
        "ds/mp_rank_00_model_states.pt": 0,
        "latest": 0,
        "ds/zero_pp_rank_1_mp_rank_00_optim_states.pt": 1,
    }


@pytest.mark.parametrize(
    ("present", "claims", "message"),
    [
        (["latest", "ds/extra.pt"], [[_digest("latest", 0)]], "ds/extra.pt was written by no rank"),
        ([], [[_digest("latest", 0)]], "latest is claimed but absent"),
        (["latest"], [[_digest("latest", 0)], [_digest("latest", 1)]], "claimed by two ranks"),
    ],
)
def test_account_refuses_a_folder_the_ranks_do_not_cover_exactly(
    present: list[str], claims: list[list[FileDigest]], message: str
) -> None:
    with pytest.raises(UnaccountedFilesError, match=message):
        account(present, claims)


def _manifest(world_size: int, sizes: dict[str, tuple[int, int]]) -> dict[str, object]:
    files = {n: {"sha256": "0" * 64, "bytes": b, "rank": r} for n, (b, r) in sizes.items()}
    return {"worldSize": world_size, "files": files}


SIZES = {"a": (100, 0), "b": (90, 1), "c": (10, 0), "d": (5, 1), "e": (1, 0)}


def test_with_the_same_world_size_each_rank_verifies_the_files_it_wrote() -> None:
    manifest = _manifest(2, SIZES)
    assert assigned(manifest, rank=0, world_size=2) == ["a", "c", "e"]
    assert assigned(manifest, rank=1, world_size=2) == ["b", "d"]


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_with_another_world_size_the_files_are_split_round_robin_largest_first(
    world_size: int,
) -> None:
    manifest = _manifest(2, SIZES)
    shares = [assigned(manifest, rank=r, world_size=world_size) for r in range(world_size)]
    assert sorted(n for share in shares for n in share) == sorted(SIZES)
    largest_first = sorted(SIZES, key=lambda n: -SIZES[n][0])
    assert shares[0][0] == "a"
    for rank, share in enumerate(shares):
        assert share == sorted(largest_first[rank::world_size])


def test_a_manifest_without_writers_is_split_round_robin() -> None:
    manifest = {"worldSize": 2, "files": {"a": {"bytes": 2}, "b": {"bytes": 1}}}
    assert assigned(manifest, rank=1, world_size=2) == ["b"]


def test_a_truncated_file_is_reported_by_its_size(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "shard.pt").write_bytes(b"weights" * 100)
    manifest = write_manifest(tmp_path, {"step": 1})
    assert check(tmp_path, manifest, ["ds/shard.pt"]) is None
    with (tmp_path / "ds" / "shard.pt").open("r+b") as handle:
        handle.truncate(350)
    assert check(tmp_path, manifest, ["ds/shard.pt"]) == (
        "ds/shard.pt does not match its checksum (350 bytes, 700 written)"
    )
    assert verify(tmp_path)[0] is None


def test_the_manifest_lists_no_universal_copy_and_not_itself(tmp_path: Path) -> None:
    (tmp_path / "ds_universal" / "zero").mkdir(parents=True)
    (tmp_path / "ds_universal" / "zero" / "x.pt").write_bytes(b"x")
    (tmp_path / "latest").write_text("ds")
    write_manifest(tmp_path, {"step": 1})
    assert listing(tmp_path) == ["latest"]


def test_a_manifest_that_lists_no_files_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"step": 3, "files": {}}')
    assert read_manifest(tmp_path) == (None, "manifest lists no files")

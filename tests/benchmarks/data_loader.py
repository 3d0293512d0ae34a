"""Benchmark: preparing token shards, and reading them the trainer's way on 2 ranks, for a corpus
of ~0.1 GB and one 10x larger (>= 1 GB), to show a rank's memory does not grow with the corpus.

    .venv/bin/python -m tests.benchmarks.data_loader [--small-tokens 110e6]
        [--large-tokens 1100e6] [--prepare-tokens 10e6] [--batches 1000]

Three measurements, every corpus generated in a temporary folder under /tmp and deleted after:
- Preparation: a synthetic jsonl corpus (words of random letters, Zipf-distributed) tokenized by
  `trainkube prepare` as a user runs it (a subprocess; a byte-level BPE of 8,192 tokens trained
  here on part of the corpus, loaded from its folder): tokens/s from the first record read to
  the index written, and the command's wall time. Tokenization dominates it, so a corpus of
  `--prepare-tokens` is enough to measure it.
- Writing: `--small-tokens` and `--large-tokens` of random ids (a 32,000-token vocabulary, so
  16 bits, documents of 200-4,000 tokens) through the same shard writer, fsync included:
  tokens/s and MB/s.
- Reading: 2 real processes, each the rank of a 2-rank job (sequence 2,048, global batch 64,
  micro-batch 8), reading its micro-batches of `--batches` global batches from the middle of the
  first epoch through `datasets_split` and the sampler, as the trainer does; the page cache is
  dropped for the shards first (cold), then the same batches are read again (warm). Per rank:
  samples/s and tokens/s, and memory from /proc/self/status: VmRSS (with RssAnon and RssFile)
  after imports, after opening the corpus and after reading, VmHWM (the peak), and the corpus
  pages still mapped after reading (the Rss of the shard files' mappings in /proc/self/smaps).
  1,000 batches are 32,000 samples per rank: together the ranks read more samples than the
  small corpus holds.

Prints a table and writes tests/benchmarks/results/data-loader.json. Numbers, not assertions:
they move with the machine and whatever else runs on it (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "data-loader.json"
REPO = Path(__file__).resolve().parents[2]
SEQUENCE, GLOBAL_BATCH, MICRO, RANKS, SEED = 2048, 64, 8, 2, 7
VOCAB = 32_000


def _memory() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM of this process, in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _mapped(folder: Path) -> int:
    """Bytes of the corpus's files resident in this process's page tables (/proc/self/smaps:
    the Rss of every mapping of a file under `folder`): the corpus pages the rank holds."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = len(head) >= 6 and head[5].startswith(str(folder))
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) * 1024
    return total


def worker(folder: Path, rank: int, batches: int) -> dict[str, Any]:
    """One rank reading its samples of `batches` global batches, cold then warm."""
    from trainkube_trainer.data.feed import Feed  # noqa: PLC0415
    from trainkube_trainer.data.sampler import BatchSampler  # noqa: PLC0415
    from trainkube_trainer.data.tokens import TokenDataset  # noqa: PLC0415
    from trainkube_trainer.datasets_split import split  # noqa: PLC0415

    imported = _memory()
    began = time.perf_counter()
    dataset = TokenDataset(folder, sequence_length=SEQUENCE)
    train, _ = split(dataset, validation_fraction=0.001, seed=SEED)
    sampler = BatchSampler(
        examples=len(train),
        global_batch_size=GLOBAL_BATCH,
        micro_batch_size=MICRO,
        ranks=RANKS,
        seed=SEED,
    )
    opened, open_seconds = _memory(), time.perf_counter() - began
    first = sampler.batches_per_epoch // 2
    passes = []
    for _ in ("cold", "warm"):
        began, samples, checksum = time.perf_counter(), 0, 0
        feed = Feed(sampler, train, rank)  # the trainer's path
        for batch in range(first, first + batches):
            for ids, _ in feed.micro_batches(batch):
                samples += len(ids)
                checksum += int(ids[:, 0].sum())
        seconds = time.perf_counter() - began
        passes.append(
            {
                "seconds": round(seconds, 3),
                "samplesPerSecond": round(samples / seconds, 1),
                "tokensPerSecond": round(samples * SEQUENCE / seconds),
                "samples": samples,
                "checksum": checksum,
            }
        )
    return {
        "rank": rank,
        "samplesInCorpus": len(dataset),
        "openSeconds": round(open_seconds, 4),
        "cold": passes[0],
        "warm": passes[1],
        "memory": {
            "afterImports": imported,
            "afterOpen": opened,
            "afterReading": _memory(),
            "corpusPagesHeldAfterReading": _mapped(folder),
        },
    }


def _drop_cache(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write_corpus(folder: Path, tokens: int) -> dict[str, Any]:
    """Random ids in documents of 200-4,000 tokens, each ending in eos, through the writer."""
    from trainkube_trainer.data.tokens import Kind, TokenWriter  # noqa: PLC0415

    rng = np.random.default_rng(0)
    writer = TokenWriter(
        folder,
        kind=Kind.TEXT,
        vocab_size=VOCAB,
        eos_token_id=2,
        pad_token_id=0,
        metadata={"source": {"synthetic": True}},
    )
    began, written, chunk = time.perf_counter(), 0, 10_000_000
    while written < tokens:
        size = min(chunk, tokens - written)
        ids = rng.integers(3, VOCAB, size=size, dtype=np.uint16)
        lengths = []
        left = size
        while left > 0:
            length = min(left, int(rng.integers(200, 4001)))
            lengths.append(length)
            left -= length
        ends = np.cumsum(lengths) - 1
        ids[ends] = 2
        writer.add(ids, np.array(lengths, np.int64))
        written += size
    index = writer.close()
    seconds = time.perf_counter() - began
    size_bytes = sum(p.stat().st_size for p in folder.iterdir())
    return {
        "tokens": index["tokens"],
        "bytes": size_bytes,
        "shards": len(index["shards"]),
        "writeSeconds": round(seconds, 2),
        "writeTokensPerSecond": round(index["tokens"] / seconds),
        "writeMBPerSecond": round(size_bytes / seconds / 1e6, 1),
    }


def read_corpus(folder: Path, batches: int) -> list[dict[str, Any]]:
    """Both ranks as processes of their own, at the same time."""
    _drop_cache(folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.benchmarks.data_loader", "--worker", str(rank)),
                *("--folder", str(folder), "--batches", str(batches)),
            ],
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO,
            text=True,
        )
        for rank in range(RANKS)
    ]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=1800)
        assert process.returncode == 0, out
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _words(rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(20_000)]


def prepare_corpus(root: Path, tokens: int) -> dict[str, Any]:
    """A jsonl corpus of about `tokens` tokens, prepared by `trainkube prepare`."""
    from trainkube_trainer.tokenizer import train_bpe  # noqa: PLC0415

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    words = _words(rng)
    texts: list[str] = []
    chars = 0
    corpus = root / "corpus.jsonl"
    with corpus.open("w") as out:
        while chars < tokens * 5:  # about 0.2 tokens per character with this BPE
            picks = rng.zipf(1.3, size=int(rng.integers(50, 400))) % len(words)
            text = " ".join(words[i] for i in picks) + "."
            if len(texts) < 5000:
                texts.append(text)
            chars += len(text)
            out.write(json.dumps({"text": text}) + "\n")
    train_bpe(texts, vocab_size=8192, directory=root / "tokenizer")
    command = [str(Path(sys.executable).parent / "trainkube"), "prepare", "--files", str(corpus)]
    command += ["--format", "jsonl", "--tokenizer", str(root / "tokenizer")]
    command += ["--output", str(root / "prepared")]
    began = time.perf_counter()
    done = subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - began
    index = json.loads((root / "prepared" / "index.json").read_text())
    rate = re.search(r"([\d,]+) tokens/s", done.stdout)
    assert rate is not None, done.stdout
    return {
        "textBytes": corpus.stat().st_size,
        "tokens": index["tokens"],
        "documents": index["documents"],
        "dtype": index["dtype"],
        "tokensPerSecond": int(rate.group(1).replace(",", "")),
        "commandWallSeconds": round(wall, 2),
        "output": done.stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small-tokens", type=float, default=110e6)
    parser.add_argument("--large-tokens", type=float, default=1100e6)
    parser.add_argument("--prepare-tokens", type=float, default=10e6)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.folder, args.worker, args.batches)), flush=True)
        return

    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadAverageAtStart": os.getloadavg(),
        },
        "setup": {
            "sequenceLength": SEQUENCE,
            "globalBatch": GLOBAL_BATCH,
            "microBatch": MICRO,
            "ranks": RANKS,
            "batchesRead": args.batches,
        },
    }
    root = Path(tempfile.mkdtemp(prefix="trainkube-data-bench-", dir="/tmp"))
    try:
        report["prepare"] = prepare_corpus(root / "prepare", int(args.prepare_tokens))
        shutil.rmtree(root / "prepare")
        print("prepare", json.dumps(report["prepare"]), flush=True)
        corpora = []
        for name, tokens in (("small", args.small_tokens), ("large", args.large_tokens)):
            folder = root / name
            written = write_corpus(folder, int(tokens))
            ranks = read_corpus(folder, args.batches)
            shutil.rmtree(folder)
            corpora.append({"name": name, **written, "ranks": ranks})
            print(name, json.dumps(corpora[-1]), flush=True)
        report["corpora"] = corpora
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["machine"]["loadAverageAtEnd"] = os.getloadavg()
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    mib = 1024**2
    print(f"\nprepare: {report['prepare']['tokensPerSecond']:,} tokens/s")
    print(
        f"{'corpus':>8} {'GB':>6} {'rank':>4} {'cold tok/s':>12} {'warm tok/s':>12} "
        f"{'RSS open':>9} {'RSS read':>9} {'HWM':>7} {'corpus held':>11} (MiB)"
    )
    for corpus in corpora:
        for rank in corpus["ranks"]:
            memory = rank["memory"]
            print(
                f"{corpus['name']:>8} {corpus['bytes'] / 1e9:>6.2f} {rank['rank']:>4} "
                f"{rank['cold']['tokensPerSecond']:>12,} {rank['warm']['tokensPerSecond']:>12,} "
                f"{memory['afterOpen']['VmRSS'] / mib:>9.1f} "
                f"{memory['afterReading']['VmRSS'] / mib:>9.1f} "
                f"{memory['afterReading']['VmHWM'] / mib:>7.1f} "
                f"{memory['corpusPagesHeldAfterReading'] / mib:>11.2f}"
            )


if __name__ == "__main__":
    main()

"""Prepared token shards: written and read back exactly (plain text across shard boundaries,
prompt/response with its loss mask, 16 and 32-bit ids), complete only once their index exists,
and refused with the wrong tokenizer; the global sample order: a bijection per epoch, the same
on any number of ranks, resumable at any batch; a BPE trained here, saved and loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from trainkube import cli
from trainkube.api.data import BuiltinCorpus, FileFormat
from trainkube.runconfig import DataRef, Files, ModelRef
from trainkube_trainer.data import tokens
from trainkube_trainer.data.corpus import tiny_instructions, tiny_stories
from trainkube_trainer.data.prepare import prepare
from trainkube_trainer.data.sampler import BatchSampler, Permutation, key
from trainkube_trainer.data.source import DataError, record_batches
from trainkube_trainer.data.tokenize import pack_text, prompt_response
from trainkube_trainer.data.tokens import INDEX, Kind, TokenDataset, TokensError, TokenWriter
from trainkube_trainer.datasets_split import open_prepared, split
from trainkube_trainer.tokenizer import byte_tokenizer, load_tokenizer, train_bpe

STORIES = DataRef(builtin=BuiltinCorpus.TINY_STORIES, sequence_length=64)
INSTRUCTIONS = DataRef(
    builtin=BuiltinCorpus.TINY_INSTRUCTIONS,
    prompt_field="prompt",
    response_field="response",
    sequence_length=32,
)


def test_text_shards_read_back_exactly_the_packed_stream_across_shard_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "OPEN_MAPS", 2)  # shards are mapped and closed as reads move
    tokenizer = byte_tokenizer()
    batches = record_batches(STORIES, batch_size=100)
    index = prepare(batches, tokenizer, tmp_path, data=STORIES, shard_tokens=30_000)
    assert index["dtype"] == "uint16"
    assert len(index["shards"]) > 5
    dataset = TokenDataset(tmp_path, sequence_length=64)
    expected, _ = pack_text(tiny_stories(), tokenizer, field="text", sequence_length=64)
    assert len(dataset) == len(expected)
    read = torch.stack([torch.from_numpy(dataset.sample(i)[0]) for i in range(len(dataset))])
    assert torch.equal(read, expected)
    ids, labels = dataset.sample(17)
    assert np.array_equal(ids, labels)
    # Read together in any order: one gather per shard, a sample across a shard's end alone.
    bounds = np.cumsum([shard["tokens"] for shard in index["shards"]])
    starts = np.arange(len(dataset)) * 64
    across = np.searchsorted(bounds, starts, side="right") != np.searchsorted(
        bounds, starts + 63, side="right"
    )
    assert across.sum() > 0
    order = np.random.default_rng(0).permutation(len(dataset))
    gathered, gathered_labels = dataset.samples(order)
    assert torch.equal(torch.from_numpy(gathered), expected[order])
    assert np.array_equal(gathered, gathered_labels)


def test_prompt_response_shards_read_back_with_the_loss_on_the_response_only(
    tmp_path: Path,
) -> None:
    tokenizer = byte_tokenizer()
    prepare(record_batches(INSTRUCTIONS, batch_size=300), tokenizer, tmp_path, data=INSTRUCTIONS)
    dataset = TokenDataset(tmp_path, sequence_length=32)
    assert dataset.kind is Kind.PROMPT_RESPONSE
    ids, labels = prompt_response(
        tiny_instructions(),
        tokenizer,
        prompt_field="prompt",
        response_field="response",
        sequence_length=32,
    )
    assert len(dataset) == len(ids) == 2000
    for i in (0, 1, 999, 1999):
        got_ids, got_labels = dataset.sample(i)
        assert np.array_equal(got_ids, ids[i].numpy())
        assert np.array_equal(got_labels, labels[i].numpy())


def test_a_vocabulary_over_16_bits_is_stored_in_32_bits_and_read_back(tmp_path: Path) -> None:
    writer = TokenWriter(
        tmp_path,
        kind=Kind.TEXT,
        vocab_size=128_256,
        eos_token_id=128_001,
        pad_token_id=0,
        metadata={},
    )
    tokens = np.array([5, 70_000, 128_001, 65_536, 128_255, 128_001])
    writer.add(tokens, np.array([3, 3]))
    assert writer.close()["dtype"] == "uint32"
    dataset = TokenDataset(tmp_path, sequence_length=3)
    read = [dataset.sample(i)[0].tolist() for i in range(2)]
    assert read == [[5, 70_000, 128_001], [65_536, 128_255, 128_001]]


def test_a_folder_is_complete_only_once_its_index_is_written_and_a_rerun_starts_clean(
    tmp_path: Path,
) -> None:
    def writer() -> TokenWriter:
        return TokenWriter(
            tmp_path,
            kind=Kind.TEXT,
            vocab_size=259,
            eos_token_id=1,
            pad_token_id=0,
            metadata={},
            shard_tokens=4,
        )

    interrupted = writer()
    interrupted.add(np.arange(3, 9), np.array([6]))  # one shard finished, renamed
    interrupted.add(np.arange(3, 5), np.array([2]))  # one still under its temporary name
    assert (tmp_path / "shard-00000.tokens").exists()
    assert (tmp_path / "shard-00001.tokens.tmp").exists()
    with pytest.raises(TokensError, match=r"index.json is missing"):
        TokenDataset(tmp_path, sequence_length=2)
    again = writer()
    again.add(np.arange(10, 14), np.array([4]))
    again.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.json",
        "shard-00000.docs",
        "shard-00000.tokens",
    ]
    assert TokenDataset(tmp_path, sequence_length=2).sample(1)[0].tolist() == [12, 13]
    with pytest.raises(TokensError, match="already holds prepared tokens"):
        writer()


def test_prepared_tokens_of_another_tokenizer_or_kind_are_refused(tmp_path: Path) -> None:
    prepare(record_batches(STORIES), byte_tokenizer(), tmp_path, data=STORIES)
    files = Files(path=str(tmp_path), format=FileFormat.TOKENS)
    other = train_bpe(["a b c", "c b a"] * 50, vocab_size=300, directory=tmp_path / "bpe")
    with pytest.raises(DataError, match=r"prepared with the tokenizer .* prepare the data with"):
        open_prepared(DataRef(files=files, sequence_length=64), other)
    as_sft = DataRef(files=files, prompt_field="p", response_field="r", sequence_length=64)
    with pytest.raises(DataError, match="holds text data but the job's data section describes"):
        open_prepared(as_sft, byte_tokenizer())
    dataset = open_prepared(DataRef(files=files, sequence_length=64), byte_tokenizer())
    assert len(dataset) > 0


def test_validation_is_held_out_from_training_and_both_cover_every_sample(
    tmp_path: Path,
) -> None:
    prepare(record_batches(STORIES), byte_tokenizer(), tmp_path, data=STORIES)
    dataset = TokenDataset(tmp_path, sequence_length=64)
    train, validation = split(dataset, validation_fraction=0.05, seed=3)
    assert len(validation) == int(len(dataset) * 0.05)
    placed = [train.permutation(train.start + i) for i in range(len(train))]
    held = [validation.permutation(i) for i in range(len(validation))]
    assert sorted(placed + held) == list(range(len(dataset)))
    ids, labels = train.batch([0, 5])
    assert ids.shape == labels.shape == (2, 64)
    assert torch.equal(ids[1], torch.from_numpy(dataset.sample(placed[5])[0]))


@pytest.mark.parametrize("size", [1, 2, 3, 17, 1000, 4097])
def test_the_sample_permutation_is_a_bijection(size: int) -> None:
    permutation = Permutation(size, key(7, 0))
    assert sorted(permutation(i) for i in range(size)) == list(range(size))


def test_epochs_are_shuffled_differently() -> None:
    sampler = BatchSampler(
        examples=1000, global_batch_size=100, micro_batch_size=5, ranks=2, seed=1
    )
    first, second = sampler.global_batch(0), sampler.global_batch(10)  # epoch 0 and 1
    assert not torch.equal(first, second)
    epoch = torch.cat([sampler.global_batch(b) for b in range(10)])
    assert sorted(epoch.tolist()) == list(range(1000))


def _token_order(sampler: BatchSampler, batches: range) -> list[int]:
    """The samples the ranks train on, in the global order (micro-step, then rank)."""
    order: list[int] = []
    for b in batches:
        per_rank = [sampler.micro_batches(b, r) for r in range(sampler.ranks)]
        for k in range(sampler.accumulation):
            for rank in range(sampler.ranks):
                order.extend(per_rank[rank][k].tolist())
    return order


def test_a_resume_mid_epoch_on_two_ranks_continues_the_one_rank_order_exactly() -> None:
    def sampler(ranks: int, micro: int) -> BatchSampler:
        return BatchSampler(
            examples=997, global_batch_size=32, micro_batch_size=micro, ranks=ranks, seed=5
        )

    straight = _token_order(sampler(1, 8), range(0, 60))  # crosses into the second epoch
    resumed = _token_order(sampler(1, 8), range(0, 13)) + _token_order(sampler(2, 4), range(13, 60))
    assert resumed == straight
    assert _token_order(sampler(4, 2), range(13, 60)) == straight[13 * 32 :]


def test_a_bpe_trained_here_saves_and_loads_back_through_the_users_path(tmp_path: Path) -> None:
    texts = [r["text"] for r in tiny_stories(500)]
    trained = train_bpe(texts, vocab_size=400, directory=tmp_path / "tok")
    loaded = load_tokenizer(ModelRef(tokenizer_path=str(tmp_path / "tok")))
    assert len(loaded) == len(trained) == 400
    text = texts[0]
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert ids == trained(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(text) / 2  # it learnt merges, not bytes
    assert loaded.decode(ids) == text
    assert loaded.eos_token == "<|endoftext|>"
    assert loaded.pad_token_id is not None
    assert loaded.pad_token_id != loaded.eos_token_id
    # A tokenizers file alone (no transformers config) loads too, with its end of sequence.
    alone = load_tokenizer(ModelRef(tokenizer_path=str(tmp_path / "tok" / "tokenizer.json")))
    assert alone(text, add_special_tokens=False)["input_ids"] == ids
    assert alone.eos_token_id == loaded.eos_token_id
    # Prepared with it: 16-bit ids that decode back to the corpus.
    prepare(record_batches(STORIES), loaded, tmp_path / "tokens", data=STORIES)
    index = json.loads((tmp_path / "tokens" / INDEX).read_text())
    assert index["tokenizer"]["vocabSize"] == 400
    first = TokenDataset(tmp_path / "tokens", sequence_length=32).sample(0)[0]
    assert str(loaded.decode(first.tolist())).startswith(tiny_stories(1)[0]["text"][:20])


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.TEXT, FileFormat.PARQUET])
def test_files_of_each_format_stream_into_the_records_they_hold(
    tmp_path: Path, fmt: FileFormat
) -> None:
    texts = [r["text"] for r in tiny_stories(300)]
    folder = tmp_path / "files"
    folder.mkdir()
    if fmt is FileFormat.JSONL:
        (folder / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
    elif fmt is FileFormat.TEXT:
        (folder / "a.txt").write_text("\n".join(texts) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist([{"text": t} for t in texts]), folder / "a.parquet")
    data = DataRef(files=Files(path=str(folder), format=fmt), sequence_length=64)
    tokenizer = byte_tokenizer()
    index = prepare(record_batches(data, batch_size=128), tokenizer, tmp_path / "out", data=data)
    assert index["documents"] == 300
    assert index["source"]["files"]["format"] == str(fmt)
    expected, _ = pack_text(tiny_stories(300), tokenizer, field="text", sequence_length=64)
    dataset = TokenDataset(tmp_path / "out", sequence_length=64)
    assert np.array_equal(dataset.sample(len(dataset) - 1)[0], expected[-1].numpy())


def test_trainkube_prepare_writes_prompt_response_shards_with_a_tokenizer_from_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [r["prompt"] + r["response"] for r in tiny_instructions(500)]
    train_bpe(texts, vocab_size=300, directory=tmp_path / "tok")
    code = cli.main(
        [
            *("prepare", "--builtin", "tiny-instructions", "--tokenizer", str(tmp_path / "tok")),
            *("--prompt-field", "prompt", "--response-field", "response"),
            *("--output", str(tmp_path / "out")),
        ]
    )
    assert code == 0
    assert "2,000 documents" in capsys.readouterr().out
    index = json.loads((tmp_path / "out" / INDEX).read_text())
    assert (index["kind"], index["tokenizer"]["vocabSize"]) == ("promptResponse", 300)
    assert cli.main(["prepare", "--files", str(tmp_path), "--output", str(tmp_path / "x")]) == 2
    assert "--files needs --format" in capsys.readouterr().err

"""The trainer's pure parts: divergence rule, sampler, retention, checksums, packing, gates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trainkube.api.evaljob import Gate
from trainkube.api.recovery import SpikeRule
from trainkube_trainer import gates
from trainkube_trainer.checkpoints import retained, verify, write_manifest
from trainkube_trainer.data.corpus import tiny_eval, tiny_instructions, tiny_stories
from trainkube_trainer.data.sampler import BatchSampler, next_batch_index
from trainkube_trainer.data.tokenize import IGNORE, pack_text, prompt_response
from trainkube_trainer.divergence import DivergenceDetector
from trainkube_trainer.tokenizer import BYTE_VOCAB_SIZE, byte_tokenizer


def _feed(detector: DivergenceDetector, losses: list[float]) -> list[int]:
    return [
        step
        for step, loss in enumerate(losses, start=1)
        if detector.observe(step, loss) is not None
    ]


def test_steady_noisy_loss_never_diverges() -> None:
    losses = [2.0 + 0.05 * math.sin(i) for i in range(200)]
    assert _feed(DivergenceDetector(SpikeRule(window=20, threshold=6, patience=2)), losses) == []


def test_a_spike_is_reported_after_patience_consecutive_steps() -> None:
    losses = [2.0 + 0.01 * (i % 3) for i in range(30)] + [9.0, 9.0, 9.0]
    detector = DivergenceDetector(SpikeRule(window=20, threshold=6, patience=3))
    assert _feed(detector, losses) == [33]


def test_a_single_outlier_below_patience_is_forgiven() -> None:
    losses = [2.0 + 0.01 * (i % 3) for i in range(30)] + [9.0] + [2.0] * 10
    assert _feed(DivergenceDetector(SpikeRule(window=20, threshold=6, patience=2)), losses) == []


def test_ratio_rule_catches_a_spike_in_a_noisy_window() -> None:
    losses = [2.0 + (0.5 if i % 2 else -0.5) for i in range(20)] + [3.5, 3.5]
    assert _feed(DivergenceDetector(SpikeRule(window=20, threshold=6, patience=2)), losses) == []
    with_ratio = DivergenceDetector(SpikeRule(window=20, threshold=6, patience=2, ratio=1.5))
    assert _feed(with_ratio, losses) == [22]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_diverge_at_once(bad: float) -> None:
    verdict = DivergenceDetector(SpikeRule()).observe(1, bad)
    assert verdict is not None
    assert verdict.rule in ("nan", "inf")


def test_every_rank_gets_a_disjoint_share_of_each_global_batch() -> None:
    sampler = BatchSampler(examples=100, global_batch_size=16, micro_batch_size=2, ranks=4, seed=1)
    assert sampler.accumulation == 2
    shares = [torch.cat(sampler.micro_batches(3, rank)) for rank in range(4)]
    assert sorted(torch.cat(shares).tolist()) == sorted(sampler.global_batch(3).tolist())


def test_batches_are_deterministic_and_epochs_reshuffle() -> None:
    sampler = BatchSampler(examples=32, global_batch_size=16, micro_batch_size=4, ranks=2, seed=7)
    assert torch.equal(sampler.global_batch(1), sampler.global_batch(1))
    epoch0 = torch.cat([sampler.global_batch(0), sampler.global_batch(1)])
    assert sorted(epoch0.tolist()) == list(range(32))
    assert not torch.equal(sampler.global_batch(0), sampler.global_batch(2))


def test_the_global_batch_is_the_same_on_one_rank_or_two() -> None:
    one = BatchSampler(examples=64, global_batch_size=16, micro_batch_size=4, ranks=1, seed=3)
    two = BatchSampler(examples=64, global_batch_size=16, micro_batch_size=4, ranks=2, seed=3)
    assert torch.equal(one.global_batch(5), two.global_batch(5))


def test_skipped_batch_ranges_are_jumped_over() -> None:
    assert next_batch_index(5, [(10, 20)]) == 5
    assert next_batch_index(10, [(10, 20)]) == 20
    assert next_batch_index(12, [(10, 20), (20, 25)]) == 25


def test_too_little_data_for_one_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchSampler(examples=8, global_batch_size=16, micro_batch_size=4, ranks=2, seed=0)


def test_retention_keeps_the_newest_and_every_mth() -> None:
    steps = [100, 200, 300, 400, 500, 600]
    assert retained(steps, keep_last=2, keep_every=0) == {500, 600}
    assert retained(steps, keep_last=2, keep_every=300) == {300, 500, 600}


def test_manifest_checksums_catch_a_changed_or_missing_file(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "shard.pt").write_bytes(b"weights")
    write_manifest(tmp_path, {"step": 7})
    assert verify(tmp_path)[0] is not None
    (tmp_path / "ds" / "shard.pt").write_bytes(b"weightz")
    assert verify(tmp_path) == (None, "ds/shard.pt does not match its checksum")
    (tmp_path / "ds" / "shard.pt").unlink()
    assert verify(tmp_path) == (None, "ds/shard.pt is missing")


def test_byte_tokenizer_needs_no_download_and_round_trips() -> None:
    tokenizer = byte_tokenizer()
    assert len(tokenizer) == BYTE_VOCAB_SIZE
    ids = tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "Once upon a time"


def test_packing_fills_every_sequence_with_text() -> None:
    ids, labels = pack_text(tiny_stories(50), byte_tokenizer(), field="text", sequence_length=64)
    assert ids.shape[1] == 64
    assert ids.shape[0] > 50
    assert torch.equal(ids, labels)


def test_prompt_response_trains_on_the_response_only() -> None:
    tokenizer = byte_tokenizer()
    record = {"prompt": "What is 2 plus 3? ", "response": "5"}
    _, labels = prompt_response(
        [record], tokenizer, prompt_field="prompt", response_field="response", sequence_length=32
    )
    prompt_length = len(record["prompt"])
    assert (labels[0, :prompt_length] == IGNORE).all()
    assert tokenizer.decode(labels[0, prompt_length : prompt_length + 1]) == "5"
    assert labels[0, prompt_length + 1] == tokenizer.eos_token_id
    assert (labels[0, prompt_length + 2 :] == IGNORE).all()


def test_builtin_corpora_are_deterministic_and_consistent() -> None:
    assert tiny_stories(5) == tiny_stories(5)
    assert all(set(r) == {"prompt", "response"} for r in tiny_instructions(20))
    for item in tiny_eval(20):
        assert item["choices"][item["answer_index"]] == item["answer"]


def test_gates_judge_bounds_and_regressions_in_the_right_direction() -> None:
    candidate = {"ppl.perplexity": 10.0, "qa.exactMatch": 0.5}
    baseline = {"ppl.perplexity": 9.0, "qa.exactMatch": 0.7}
    verdicts = gates.check(
        [
            Gate(metric="ppl.perplexity", max_regression=2.0),
            Gate(metric="ppl.perplexity", max_regression=0.5),
            Gate(metric="qa.exactMatch", max_regression=0.1),
            Gate(metric="qa.exactMatch", min=0.4, max=0.6),
            Gate(metric="qa.accuracy", min=0.1),
        ],
        candidate,
        baseline,
    )
    assert [v.passed for v in verdicts] == [True, False, False, True, False]
    assert "no such metric" in verdicts[4].message


def test_min_improvement_passes_only_a_candidate_better_than_the_baseline_by_the_bound() -> None:
    candidate = {"task.exactMatch": 0.9, "ppl.perplexity": 8.0, "speed.ttftP50Ms": 80.0}
    baseline = {"task.exactMatch": 0.2, "ppl.perplexity": 9.0, "speed.ttftP50Ms": 100.0}
    verdicts = gates.check(
        [
            Gate(metric="task.exactMatch", min_improvement=0.5),
            Gate(metric="task.exactMatch", min_improvement=0.8),
            Gate(metric="ppl.perplexity", min_improvement=1.0),  # lower is better: 1.0 lower
            Gate(metric="ppl.perplexity", min_improvement=1.5),
            Gate(metric="speed.ttftP50Ms", min_improvement=0.1),  # 20 % faster
            Gate(metric="speed.ttftP50Ms", min_improvement=0.3),
        ],
        candidate,
        baseline,
    )
    assert [v.passed for v in verdicts] == [True, False, True, False, True, False]
    assert "not better than the baseline by at least 0.8" in verdicts[1].message
    assert "not faster than the baseline by at least 30.0%" in verdicts[5].message
    missing = gates.check([Gate(metric="task.exactMatch", min_improvement=0.1)], candidate, None)
    assert "no baseline value to compare with" in missing[0].message

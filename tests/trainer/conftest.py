"""Shared by the trainer tests: one tiny model trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer.runs import TINY, pretrain_config, run
from trainkube.runconfig import ModelRef
from trainkube_trainer.models import load_model, load_tokenizer


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained 60 steps on two ranks (ZeRO-2); its saved output folder."""
    root = tmp_path_factory.mktemp("pretrained")
    outcome = run(pretrain_config(root, steps=60, interval=30), root)
    assert outcome.exit_code == 0, outcome.log[-3000:]
    return root / "out" / "model"


@pytest.fixture(scope="session")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture with fresh weights, saved with save_pretrained (a baseline)."""
    folder = tmp_path_factory.mktemp("untrained") / "model"
    ref = ModelRef(architecture=TINY)
    tokenizer = load_tokenizer(ref)
    torch.manual_seed(0)
    load_model(ref, tokenizer=tokenizer, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""Rank 0's reports to its ConfigMap never hold up training: an apiserver that takes the
connection and never answers (as one behind a broken network does) leaves the steps, the
reports and the events returning at once; each request gives up after its time; the result
waits for what was handed over, within a bound. Delivery through a real apiserver is
tests/cluster/test_operator.py's (the trainer's reports reach status)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from trainkube_trainer.reporting import ConfigMapSink, Reporter


@pytest.fixture
def unanswering() -> Iterator[client.ApiClient]:
    """An API client whose server accepts connections (the kernel's backlog) and never
    answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.getsockname()[1]}"
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        server.close()


def test_reports_to_an_apiserver_that_never_answers_do_not_hold_up_the_loop(
    unanswering: client.ApiClient, tmp_path: Path
) -> None:
    sink = ConfigMapSink("job-ltj-report", "team", api_client=unanswering, send_seconds=3600)
    reporter = Reporter(tmp_path, enabled=True, min_interval=0, sink=sink)

    def loop() -> None:
        for step in range(1, 6):
            reporter.stepped(step, 0.1)
            reporter.progress(step=step, totalSteps=5)
            reporter.event("checkpoint", step=step, path=f"step-{step}")

    training = threading.Thread(target=loop, daemon=True)
    training.start()
    training.join(timeout=30)  # the first request waits an hour for its answer
    assert not training.is_alive(), "a step or a report waited for the apiserver"
    written = json.loads((tmp_path / "progress.json").read_text())
    assert written["step"] == 5
    assert [e["step"] for e in written["events"]] == [1, 2, 3, 4, 5]
    assert not sink.flush(timeout=0.5)  # still waiting for the apiserver


def test_a_report_the_apiserver_never_answers_is_given_up_and_logged(
    unanswering: client.ApiClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = ConfigMapSink("job-ltj-report", "team", api_client=unanswering, send_seconds=0.5)
    reporter = Reporter(tmp_path, enabled=True, min_interval=0, sink=sink)
    reporter.progress(step=1, totalSteps=5)
    reporter.result(outcome="Succeeded", exit_code=0)  # waits for what was handed over
    assert sink.flush(timeout=0)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failed = [line for line in lines if line["event"] == "report-not-sent"]
    assert failed
    assert all(line["configmap"] == "job-ltj-report" for line in failed)
    assert json.loads((tmp_path / "result.json").read_text())["outcome"] == "Succeeded"

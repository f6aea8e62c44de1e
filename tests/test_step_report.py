"""Throughput leaves the time the hooks take (evaluations, checkpoint saves) out of tokens/s."""

from types import SimpleNamespace

import pytest

from jaxslm.training import step_report


def test_throughput_leaves_out_paused_time(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(step_report, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    throughput = step_report.Throughput(100, 1e6, 1e6, step=0)
    now[0] = 10.0  # two steps trained
    with throughput.paused():  # a checkpoint measures step 2 after 3 s of evaluation
        now[0] = 13.0
        first = throughput.measure(2)
        now[0] = 20.0  # its save: left out of the next measurement
    now[0] = 30.0
    second = throughput.measure(4)
    assert first == pytest.approx({"tokens_per_second": 20.0, "mfu": 0.2})
    assert second == pytest.approx({"tokens_per_second": 20.0, "mfu": 0.2})
    assert throughput.measure(4) == {}  # no step since the last measurement

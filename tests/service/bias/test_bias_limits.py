"""What one BiasReport may hold: label and id length, distinct labels and group columns, each a
setting; a request past one is refused with INVALID_ARGUMENT that names the setting, without
the server's memory or event loop paying for it, and nothing a caller sends is dropped unread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from bias_support import PLAIN, call, chunked, normal_rows, stub
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc

# A small server's limits, so each is reached with a few rows.
MAX_CHARS, MAX_VALUES, MAX_COLUMNS = 8, 5, 2
BIG_ROWS = 32_768  # one request of the large-label case: 2 MiB of rows


@pytest.fixture(scope="module")
def small_limits(wide_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(
        wide_repo, bias_max_label_chars=MAX_CHARS, bias_max_group_values=MAX_VALUES,
        bias_max_group_columns=MAX_COLUMNS,
    ))
    yield running
    running.close()


@pytest.fixture(scope="module")
def default_limits(wide_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(wide_repo, max_request_rows=BIG_ROWS))
    yield running
    running.close()


def _labelled(n: int, chunk_rows: int, **groups: list[str]) -> list[pb.BiasReportRequest]:
    return chunked(PLAIN, normal_rows(n), chunk_rows, groups=groups)


def _refused(case: str) -> tuple[list[pb.BiasReportRequest], list[str]]:
    """A stream past one limit of the small server, and what its message must hold."""
    fine = ["a" * MAX_CHARS, "b"] * 100
    if case == "long label":
        labels = list(fine)
        labels[105] = "c" * (MAX_CHARS + 1)
        return _labelled(200, 50, g=labels), [
            "group column 'g': row 105 holds 9 characters", "'ccccccccc'",
            f"at most {MAX_CHARS}", "LATENTWATCH_BIAS_MAX_LABEL_CHARS",
        ]
    if case == "long id":
        requests = chunked(PLAIN, normal_rows(200), 50, ids=[f"r{i}" for i in range(200)])
        requests[3].ids[7] = "row-" + "9" * 40
        return requests, ["ids: row 157 holds 44 characters", "LATENTWATCH_BIAS_MAX_LABEL_CHARS"]
    if case == "long column name":
        return _labelled(100, 50, **{"n" * 9: fine[:100]}), [
            "column name of 9 characters", "'nnnnnnnnn'", "LATENTWATCH_BIAS_MAX_LABEL_CHARS",
        ]
    if case == "too many distinct labels":  # the sixth label arrives in the third chunk
        labels = [str(i // 40) for i in range(240)]
        return _labelled(240, 100, g=labels), [
            "group column 'g': row 200 brings a label past the 5 distinct values", "'5'",
            "LATENTWATCH_BIAS_MAX_GROUP_VALUES",
        ]
    if case == "too many columns":
        return _labelled(100, 50, a=fine[:100], b=fine[:100], c=fine[:100]), [
            "groups: 3 columns; a bias report takes at most 2",
            "LATENTWATCH_BIAS_MAX_GROUP_COLUMNS",
        ]
    if case == "column twice in a chunk":
        requests = _labelled(100, 50, g=fine[:100])
        requests[1].groups.append(pb.GroupColumn(name="g", values=fine[:50]))
        return requests, ["groups: column 'g' appears more than once in one chunk"]
    if case == "options in a later chunk":
        requests = _labelled(100, 50)
        requests[1].options.CopyFrom(pb.BiasReportOptions(bins=4))
        return requests, ["options: set in chunk 1, but only the first chunk's are read"]
    if case == "decoded rows without a decoder":
        return chunked(PLAIN, normal_rows(100), 50, options=pb.BiasReportOptions(n_decoded=3)), [
            f"n_decoded: {PLAIN}:1 has no decoder graph",
        ]
    raise AssertionError(case)


REFUSED = [
    "long label", "long id", "long column name", "too many distinct labels", "too many columns",
    "column twice in a chunk", "options in a later chunk", "decoded rows without a decoder",
]


@pytest.mark.parametrize("case", REFUSED)
def test_each_limit_is_a_setting_and_its_refusal_says_where(
    case: str, small_limits: ServerThread
) -> None:
    requests, texts = _refused(case)
    with pytest.raises(grpc.RpcError) as caught:
        call(small_limits, requests)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for text in texts:
        assert text in caught.value.details(), caught.value.details()
    assert call(small_limits, _labelled(100, 50, g=["x", "y"] * 50)).n_rows == 100


def test_labels_at_the_limits_are_taken_and_reported(small_limits: ServerThread) -> None:
    labels = ["a" * MAX_CHARS, "b", "c", "d", "e"] * 40  # MAX_VALUES values, the longest allowed
    ids = [str(i).rjust(MAX_CHARS, "0") for i in range(200)]
    requests = chunked(PLAIN, normal_rows(200), 30, ids=ids,
                       groups={"k" * MAX_CHARS: labels, "h": ["u", "v"] * 100})
    reply = call(small_limits, requests)
    assert reply.n_rows == 200
    got = {(g.column, g.value): g.n_rows for g in reply.groups}
    assert got == {**{("k" * MAX_CHARS, v): 40 for v in set(labels)}, ("h", "u"): 100,
                   ("h", "v"): 100}


class _Watch:
    """Peak RSS of this process (the server runs in it) and the slowest ListModels answered on
    a channel of its own, sampled while a block runs."""

    def __init__(self, target: str) -> None:
        self._target = target
        self.rss_growth_mib = self.slowest_s = 0.0

    def run(self, work: Callable[[], object]) -> object:
        process, probing, done = psutil.Process(), threading.Event(), threading.Event()
        base = peak = process.memory_info().rss

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.005)

        def probe() -> None:
            with grpc.insecure_channel(self._target) as channel:
                models = pb_grpc.LatentwatchStub(channel).ListModels
                models(pb.ListModelsRequest(), timeout=30)  # connected
                probing.set()
                while not done.is_set():
                    start = time.perf_counter()
                    models(pb.ListModelsRequest(), timeout=60)
                    self.slowest_s = max(self.slowest_s, time.perf_counter() - start)
                    time.sleep(0.01)

        threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
        for thread in threads:
            thread.start()
        try:
            assert probing.wait(30)
            return work()
        finally:
            time.sleep(0.1)
            done.set()
            for thread in threads:
                thread.join(60)
            self.rss_growth_mib = (peak - base) / 2**20


def test_a_long_label_costs_neither_memory_nor_other_calls(default_limits: ServerThread) -> None:
    # As labels became a fixed-width array, this one 4,096-character label among 32,768 rows
    # took 2 x 512 MiB and held the event loop for seconds; now it is refused at its row.
    labels = ["a"] * BIG_ROWS
    labels[-1] = "x" * 4096
    request = pb.BiasReportRequest(
        model_name=PLAIN, input=chunked(PLAIN, normal_rows(BIG_ROWS), BIG_ROWS)[0].input,
        groups=[pb.GroupColumn(name="g", values=labels)],
    )
    watch = _Watch(f"127.0.0.1:{default_limits.running.port}")
    outcome = watch.run(lambda: _status(default_limits, [request]))
    figures = f"RSS +{watch.rss_growth_mib:.0f} MiB, slowest ListModels {watch.slowest_s:.2f} s"
    assert watch.rss_growth_mib < 200, figures
    assert watch.slowest_s < 1.0, figures
    assert isinstance(outcome, grpc.RpcError), figures
    assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = outcome.details()
    assert "group column 'g': row 32,767 holds 4,096 characters" in details
    assert "(4,096 characters)" in details and len(details) < 400  # quoted and cut
    assert call(default_limits, _labelled(300, 100, g=["a", "b", "c"] * 100)).n_rows == 300


def test_a_thousand_group_columns_are_refused_at_the_first_chunk(
    default_limits: ServerThread,
) -> None:
    n = 2400  # 1,000 columns of 2,400 one-character labels: 7 MB
    requests = chunked(PLAIN, normal_rows(n), n,
                       groups={f"c{i}": ["a", "b"] * (n // 2) for i in range(1000)})
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:
        call(default_limits, requests)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "groups: 1,000 columns; a bias report takes at most 16" in caught.value.details()
    assert "LATENTWATCH_BIAS_MAX_GROUP_COLUMNS" in caught.value.details()
    assert time.perf_counter() - start < 5.0


def _status(server: ServerThread, requests: list[pb.BiasReportRequest]) -> object:
    try:
        return stub(server).BiasReport(iter(requests), timeout=120)
    except grpc.RpcError as err:
        return err


def test_any_significance_level_the_options_allow_is_used(small_limits: ServerThread) -> None:
    # 1 - 1e-30 rounds to 1, whose normal quantile is infinite: this used to end INTERNAL.
    options = pb.BiasReportOptions(significance_level=1e-30)
    requests = chunked(PLAIN, normal_rows(200), 100, groups={"g": ["x", "y"] * 100},
                       options=options)
    reply = call(small_limits, requests)
    assert reply.significance_level == 1e-30
    for g in reply.groups:
        assert 0 <= g.ratio_low <= g.representation_ratio <= g.ratio_high
        assert not g.significant and not g.flagged

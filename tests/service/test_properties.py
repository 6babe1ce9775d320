"""Properties of every latentwatch.v1 RPC, against one real server over a real channel.

Hypothesis builds a valid message and breaks none, one or two of its fields with arbitrary but
bounded values: tensors of any datatype name, shape (empty, zero, huge or negative dimensions,
thousands of entries) and raw_data length, NaN/Inf/huge values, odd model names and versions
(long, unicode, newlines), odd alpha/fdr/score kinds, BiasReport streams with odd group columns,
labels, ids and options; and bytes that are not a protobuf. Whatever comes in, every call
- ends within CALL_BOUND_S with OK or a status the caller can act on (never INTERNAL/UNKNOWN),
- carries error details of at most MAX_DETAILS_CHARS characters,
- when OK, answers what was asked (one finite score and a p-value in (0, 1] per row, ...),
and afterwards the server still reports SERVING and scores a known-good request.
Examples are derandomized, so a run is reproducible; the file runs in seconds. The `@example`
cases are minimal failures that wider random runs found; they run first, every time.
`pytest --hypothesis-show-statistics` shows how many calls of each test ended with which code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from repo_builder import AE_KINDS, VAE_KINDS, build_repo, build_version
from served import SERVICE, stub
from server_harness import ServerThread, server_settings

from latentwatch.errors import quote
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import V2_DTYPES, from_tensor, to_tensor

CALL_BOUND_S = 5.0
MAX_DETAILS_CHARS = 1000
OK = grpc.StatusCode.OK
ACTIONABLE = {OK, *(getattr(grpc.StatusCode, name) for name in (
    "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "UNAVAILABLE"))}
# model -> (features, latent dimensions, score kinds); wide-vae has a decoder and a reference.
MODELS = {"img-vae": (64, 3, VAE_KINDS), "tab-ae": (5, 2, AE_KINDS),
          "wide-vae": (8, 4, VAE_KINDS)}

GOOD_ROWS = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)  # img-vae's rows
PROPERTY = settings(
    derandomize=True, deadline=None, database=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = build_repo(tmp_path_factory.mktemp("properties_repo"))
    features, latent, _ = MODELS["wide-vae"]
    build_version(repo, "wide-vae", n_features=features, latent_dim=latent,
                  with_decoder=True, with_reference=True)
    running = ServerThread(server_settings(repo))
    yield running
    running.close()


# --- strategies: arbitrary values ----------------------------------------------------------------

ODD_STRINGS = ["", "\n", "img-vae\n", " img-vae", "img-vae\x00", "../img-vae", "IMG-VAE",
               "img\u2010vae", "\u202eeav-gmi", "\U0001f600", "1\r\n2", "%s%n{0}",
               "\x1f" * 130, "\U0002ebe1" * 110]  # repr makes these 4 and 10 times longer
short_texts = st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=24))
odd_texts = st.one_of(
    short_texts,
    # long strings (up to 16,000 characters) by repetition, so they cost Hypothesis a few bytes
    st.builds(lambda part, n: (part or "x") * n, st.text(min_size=1, max_size=8),
              st.integers(100, 2000)),
)
odd_versions = st.one_of(st.sampled_from(["0", "01", "2", "-1", "1.0", " 1", "9" * 30]),
                         odd_texts)
KIND_NAMES = ["", *VAE_KINDS, "score", "latent_mu", "*"]
kind_names = st.one_of(st.sampled_from(KIND_NAMES), odd_texts)
odd_kind_lists = st.one_of(
    st.lists(kind_names, max_size=4),
    st.builds(lambda k, n: [k] * n, st.one_of(st.sampled_from(KIND_NAMES), short_texts),
              st.integers(100, 3000)),
)
odd_floats = st.one_of(
    st.none(), st.floats(), st.floats(0, 1),
    st.sampled_from([0.0, 1.0, 0.005, 1e-300, 5e-324, 1 - 1e-16, -0.0]),
)
int32s = st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1), st.integers(-2, 30))
DIMENSIONS = st.one_of(st.integers(0, 8), st.integers(-(2**63), 2**63 - 1),
                       st.sampled_from([0, 1, 64, 2**31, 2**32 + 1, 2**62, 2**63 - 1, -1]))
shapes = st.one_of(
    st.lists(DIMENSIONS, max_size=10),
    st.builds(lambda head, n, fill: [*head, *([fill] * n)], st.lists(DIMENSIONS, max_size=3),
              st.integers(9, 4000), st.sampled_from([0, 1, 2, 2**62])),
)
datatypes = st.one_of(*[st.sampled_from(sorted(V2_DTYPES))] * 3,
                      st.sampled_from(["", "STRING", "BYTES", "fp32", "FP32 ", "FLOAT"]), odd_texts)
EXTREMES = [math.nan, math.inf, -math.inf, 1e30, -1e30, 3.5e38, 1e300, 65504.0, 1e6, 5e-324]


def _elements(shape: list[int], cap: int) -> int | None:
    """prod(shape), or None when a dimension is negative or the product passes cap."""
    count = 1
    for d in shape:
        if d < 0 or (count := count * d) > cap:
            return None
    return count


@st.composite
def any_tensors(draw: st.DrawFn) -> pb.Tensor:
    datatype, shape = draw(datatypes), draw(shapes)
    tensor = pb.Tensor(datatype=datatype, shape=shape)
    itemsize = V2_DTYPES[datatype].itemsize if datatype in V2_DTYPES else 4
    n = _elements(shape, 1 << 14)
    if n is not None and draw(st.booleans()):
        length = n * itemsize + draw(st.sampled_from([0, 0, 1, -1]))
        seed = draw(st.integers(0, 2**16))
        tensor.raw_data = np.random.default_rng(seed).bytes(max(length, 0))  # any bit patterns
    else:
        tensor.raw_data = draw(st.binary(max_size=256))
    return tensor


def _row_shapes(n: int, f: int, near: bool) -> list[list[int]]:
    shapes = [[n, f]] + ([[n, 1, 8, 8], [n, 8, 8]] if f == 64 else [])
    if near:
        shapes += [[0, f], [n, f + 1], [n, max(f - 1, 1)], [n], [n, f, 1], [f, n]]
    return shapes


@st.composite
def row_tensors(draw: st.DrawFn, n_features: int, max_rows: int = 40, near: bool = False
                ) -> pb.Tensor:
    """Rows a model takes; `near`: nearly right shapes, any numeric datatype, a few extreme
    values planted, raw_data one byte off."""
    n = draw(st.integers(1, max_rows))
    shape = draw(st.sampled_from(_row_shapes(n, n_features, near)))
    datatype = draw(st.sampled_from(sorted(V2_DTYPES) if near else ["FP32", "FP32", "FP64"]))
    size = math.prod(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.normal(size=size) * (draw(st.sampled_from([1.0, 4.0, 1e3])) if near else 1.0)
    if near:
        planted = st.tuples(st.integers(0, max(size - 1, 0)), st.sampled_from(EXTREMES))
        for position, value in draw(st.lists(planted, max_size=3)) if size else []:
            values[position] = value
    with np.errstate(all="ignore"):  # NaN cast to an integer type: any integer will do
        raw = values.astype(V2_DTYPES[datatype]).tobytes()
    cut = draw(st.sampled_from([0, 0, 0, 1, -1])) if near else 0
    raw = raw[:-1] if cut == 1 and raw else raw + b"\0" if cut == -1 else raw
    return pb.Tensor(datatype=datatype, shape=shape, raw_data=raw)


def features_of(name: str) -> int:
    return MODELS[name][0] if name in MODELS else 64


def odd_inputs(name: str) -> st.SearchStrategy[pb.Tensor | None]:
    return st.one_of(st.none(), *[row_tensors(features_of(name), near=True)] * 2, any_tensors())


# --- strategies: valid messages with a few fields broken ---------------------------------------


@st.composite
def broken(draw: st.DrawFn, fields: list[str], most: int = 2) -> set[str]:
    """The fields (none, one or up to `most`) a message gets arbitrary values for."""
    n = draw(st.sampled_from([0, 0, 1, 1, 1, 2] if most > 1 else [0, 0, 0, 1]))
    return set(draw(st.lists(st.sampled_from(fields), min_size=n, max_size=n, unique=True)))


def pick(draw: st.DrawFn, bad: set[str], field: str, good: st.SearchStrategy[Any],
         odd: st.SearchStrategy[Any]) -> Any:
    return draw(odd if field in bad else good, field)


good_names = st.sampled_from(sorted(MODELS))
good_versions = st.sampled_from(["", "1"])
SCORE_FIELDS = ["model_name", "model_version", "input", "score_kinds", "alpha", "fdr",
                "request_id", "score_kind"]


@st.composite
def score_requests(draw: st.DrawFn, most_broken: int = 2) -> pb.ScoreRequest:
    bad = draw(broken(SCORE_FIELDS, most_broken))
    name = pick(draw, bad, "model_name", good_names, odd_texts)
    kinds = MODELS[name][2] if name in MODELS else VAE_KINDS
    request = pb.ScoreRequest(
        model_name=name,
        model_version=pick(draw, bad, "model_version", good_versions, odd_versions),
        request_id=pick(draw, bad, "request_id", st.text(max_size=12), odd_texts),
        score_kind=pick(draw, bad, "score_kind", st.sampled_from(["", *kinds]), kind_names),
        score_kinds=pick(draw, bad, "score_kinds",
                         st.lists(st.sampled_from([*kinds, "*"]), max_size=3), odd_kind_lists),
    )
    tensor = pick(draw, bad, "input", row_tensors(features_of(name)), odd_inputs(name))
    if tensor is not None:
        request.input.CopyFrom(tensor)
    for field, good in (("alpha", st.floats(0.01, 0.99)), ("fdr", st.floats(1e-3, 0.999))):
        if (value := pick(draw, bad, field, st.none() | good, odd_floats)) is not None:
            setattr(request, field, value)
    return request


LABEL_STYLES = ["few", "one", "unicode", "empty", "unique", "long", "huge_first"]


def labels(style: str, n: int, chunk: int) -> list[str]:
    """n labels (or ids) of a style; "long" ones pass bias_max_label_chars' default of 256."""
    make: dict[str, Callable[[int], str]] = {
        "few": lambda j: "abc"[j % 3], "one": lambda j: "x", "unique": lambda j: f"v{chunk}-{j}",
        "empty": lambda j: "", "unicode": lambda j: f"\u00fc\n\u202e{j % 4}",
        "long": lambda j: "L" * 300 + str(j % 2),
        "huge_first": lambda j: "H" * 50_000 if j == 0 else "a",
    }
    return [make[style](j) for j in range(n)]


OPTION_FIELDS = {  # option -> (valid values, arbitrary values)
    "bins": (st.integers(2, 30), int32s), "top_k": (st.integers(0, 30), int32s),
    "n_decoded": (st.integers(0, 3), int32s), "alpha": (st.floats(0, 1), odd_floats),
    "sparse_fraction": (st.floats(0.01, 0.5), odd_floats),
    "significance_level": (st.floats(1e-3, 0.999), odd_floats),
}
BIAS_FIELDS = ["model_name", "model_version", "mode", *OPTION_FIELDS, "input", "ids", "groups",
               "later_model_name", "label_count"]


@st.composite
def bias_streams(draw: st.DrawFn) -> list[pb.BiasReportRequest]:
    bad = draw(broken(BIAS_FIELDS))
    name = pick(draw, bad, "model_name", good_names, odd_texts)
    options = pb.BiasReportOptions(mode=pick(draw, bad, "mode", st.sampled_from(
        ["", "max", "paper"]), st.one_of(st.sampled_from(["MAX", "none"]), odd_texts)))
    for field, (good, odd) in OPTION_FIELDS.items():
        if (value := pick(draw, bad, field, st.none() | good, odd)) is not None:
            setattr(options, field, value)
    first = pb.BiasReportRequest(
        model_name=name, options=options,
        model_version=pick(draw, bad, "model_version", good_versions, odd_versions),
    )
    columns = pick(draw, bad, "groups", st.lists(st.sampled_from(["sex", "site"]), max_size=2,
                                                  unique=True),
                   st.lists(st.one_of(st.just("sex"), odd_texts), max_size=3))
    styles = [pick(draw, bad, "groups", st.sampled_from(LABEL_STYLES[:3]),
                   st.sampled_from(LABEL_STYLES)) for _ in columns]
    id_style = pick(draw, bad, "ids", st.sampled_from([None, "unique"]),
                    st.sampled_from(LABEL_STYLES))
    chunks = []
    for i in range(pick(draw, bad, "input", st.integers(1, 3), st.integers(0, 4))):
        chunk = first if i == 0 else pb.BiasReportRequest()
        if i and "later_model_name" in bad:
            chunk.model_name = draw(st.one_of(good_names, odd_texts))
        max_rows = draw(st.sampled_from([30, 30, 2000]))
        tensor = pick(draw, bad, "input", row_tensors(features_of(name), max_rows),
                      odd_inputs(name))
        rows = 0
        if tensor is not None:
            chunk.input.CopyFrom(tensor)
            rows = tensor.shape[0] if tensor.shape and 0 <= tensor.shape[0] <= 2000 else 0
        n_labels = rows + pick(draw, bad, "label_count", st.just(0), st.sampled_from([1, -1]))
        if id_style is not None:
            chunk.ids.extend(labels(id_style, max(n_labels, 0), i))
        for column, style in zip(columns, styles, strict=True):
            chunk.groups.add(name=column, values=labels(style, max(n_labels, 0), i))
        chunks.append(chunk)
    return chunks


CONTROL_ACTIONS = pb.ModelControlRequest.Action
absent_names = odd_texts.filter(lambda name: name.strip() != "" and name not in MODELS)


@st.composite
def control_requests(draw: st.DrawFn) -> pb.ModelControlRequest:
    """Only names that do not exist, or actions that do not exist: nothing may change."""
    if draw(st.booleans()):
        action = draw(st.sampled_from([CONTROL_ACTIONS.RELOAD, CONTROL_ACTIONS.LOAD,
                                       CONTROL_ACTIONS.UNLOAD]))
        name = draw(absent_names)
    else:
        action = draw(st.sampled_from([CONTROL_ACTIONS.ACTION_UNSPECIFIED, 4, 99, -1, 2**31 - 1]))
        name = draw(st.one_of(good_names, st.just(""), odd_texts))
    version = draw(st.one_of(good_versions, odd_versions))
    return pb.ModelControlRequest(action=action, model_name=name, model_version=version)


# --- calls and the properties every call has ---------------------------------------------------


def ended(call: Callable[[], Any], allowed: set[grpc.StatusCode] = ACTIONABLE) -> tuple[
        grpc.StatusCode, Any]:
    """Runs the call (its timeout is CALL_BOUND_S); checks its status and error details."""
    started_s = time.monotonic()
    try:
        reply, code, details = call(), OK, ""
    except grpc.RpcError as err:
        reply, code, details = None, err.code(), err.details() or ""
    elapsed_s = time.monotonic() - started_s
    event(code.name)
    assert code in allowed, f"{code.name} after {elapsed_s:.2f} s: {quote(details, 300)}"
    assert len(details) <= MAX_DETAILS_CHARS, f"{len(details):,} characters: {quote(details)}"
    return code, reply


def assert_still_serving(server: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=CALL_BOUND_S)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    good = pb.ScoreRequest(model_name="img-vae", input=to_tensor(GOOD_ROWS))
    assert len(stub(server).Score(good, timeout=CALL_BOUND_S).score) == 2


def assert_scored(reply: pb.ScoreResponse, request: pb.ScoreRequest) -> None:
    rows = request.input.shape[0]
    score, p = np.asarray(reply.score), np.asarray(reply.p_value)
    assert score.shape == p.shape == (rows,), (score.shape, p.shape, list(request.input.shape))
    assert np.isfinite(score).all(), score
    assert ((p > 0) & (p <= 1)).all(), p
    assert reply.model_name == request.model_name
    assert reply.request_id == request.request_id


# --- the properties, one test per RPC ----------------------------------------------------------


@settings(PROPERTY, max_examples=60)
@given(request=score_requests())
@example(request=pb.ScoreRequest(model_name="img-vae", input=to_tensor(GOOD_ROWS),
                                 score_kinds=["\x1f" * 100, "\x1f" * 121]))
def test_score_answers_any_request_with_an_actionable_status(
    served: ServerThread, request: pb.ScoreRequest
) -> None:
    code, reply = ended(lambda: stub(served).Score(request, timeout=CALL_BOUND_S))
    if code == OK:
        assert_scored(reply, request)
    assert_still_serving(served)


@settings(PROPERTY, max_examples=25)
@given(requests=st.lists(score_requests(most_broken=1), max_size=4))
def test_score_stream_answers_in_order_until_the_first_refusal(
    served: ServerThread, requests: list[pb.ScoreRequest]
) -> None:
    replies: list[pb.ScoreResponse] = []

    def call() -> None:
        replies.extend(stub(served).ScoreStream(iter(requests), timeout=CALL_BOUND_S))

    code, _ = ended(call)
    assert len(replies) == len(requests) if code == OK else len(replies) < len(requests)
    for reply, request in zip(replies, requests, strict=False):
        assert_scored(reply, request)
    assert_still_serving(served)


@st.composite
def encode_requests(draw: st.DrawFn) -> pb.EncodeRequest:
    bad = draw(broken(["model_name", "model_version", "input"]))
    name = pick(draw, bad, "model_name", good_names, odd_texts)
    request = pb.EncodeRequest(
        model_name=name,
        model_version=pick(draw, bad, "model_version", good_versions, odd_versions),
    )
    tensor = pick(draw, bad, "input", row_tensors(features_of(name)), odd_inputs(name))
    if tensor is not None:
        request.input.CopyFrom(tensor)
    return request


@settings(PROPERTY, max_examples=30)
@given(request=encode_requests())
@example(request=pb.EncodeRequest(model_name="\U00018d09" * 100, input=to_tensor(GOOD_ROWS)))
def test_encode_answers_any_request_with_an_actionable_status(
    served: ServerThread, request: pb.EncodeRequest
) -> None:
    code, reply = ended(lambda: stub(served).Encode(request, timeout=CALL_BOUND_S))
    if code == OK:
        assert request.model_name in MODELS, reply
        _, latent, kinds = MODELS[request.model_name]
        mu = from_tensor(reply.latent_mu, "latent_mu")
        assert mu.shape == (request.input.shape[0], latent) and np.isfinite(mu).all()
        assert reply.HasField("latent_logvar") == (kinds == VAE_KINDS)
    assert_still_serving(served)


@settings(PROPERTY, max_examples=25)
@given(name=st.one_of(good_names, odd_texts), version=st.one_of(good_versions, odd_versions))
@example(name="img-vae", version="\U0002ebe1" * 100)
def test_get_model_answers_any_name_and_version(
    served: ServerThread, name: str, version: str
) -> None:
    request = pb.GetModelRequest(model_name=name, model_version=version)
    code, reply = ended(lambda: stub(served).GetModel(request, timeout=CALL_BOUND_S))
    if code == OK:
        assert reply.name == name and reply.version == "1"  # each model has version 1 only
        assert reply.default_score_kind in reply.score_kinds
    assert_still_serving(served)


TAB_ROWS = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
SEX = pb.GroupColumn(name="sex", values=["a", "b"])


@settings(PROPERTY, max_examples=40)
@given(chunks=bias_streams())
@example(chunks=[pb.BiasReportRequest(model_name="tab-ae", input=to_tensor(TAB_ROWS), groups=[SEX],
                                      options=pb.BiasReportOptions(significance_level=1e-30))])
@example(chunks=[pb.BiasReportRequest(model_name="img-vae", input=to_tensor(GOOD_ROWS),
                                      options=pb.BiasReportOptions(mode="\U00012544" * 100))])
def test_bias_report_answers_any_stream_with_an_actionable_status(
    served: ServerThread, chunks: list[pb.BiasReportRequest]
) -> None:
    code, reply = ended(lambda: stub(served).BiasReport(iter(chunks), timeout=CALL_BOUND_S))
    if code == OK:
        n = sum(c.input.shape[0] for c in chunks if c.HasField("input"))
        weight = from_tensor(reply.weight, "weight")
        assert reply.n_rows == n and weight.shape == from_tensor(reply.log_density).shape == (n,)
        assert np.isfinite(weight).all() and (weight >= 0).all(), weight
        assert abs(weight.mean() - 1) < 1e-6
        assert all(0 <= i < n for i in [*reply.sparsest, *reply.densest])
        assert len(reply.sparsest) <= reply.top_k
        for column in {g.column for g in reply.groups}:
            assert sum(g.n_rows for g in reply.groups if g.column == column) == n
    assert_still_serving(served)


# Tag 0x07 is field 0 with wire type 7: no protobuf parser accepts a message that starts so.
UNDECODABLE = b"\x07"
GOOD_SCORE = pb.ScoreRequest(model_name="img-vae", input=to_tensor(GOOD_ROWS)).SerializeToString()
RAW_METHODS = {"Score": "unary", "Encode": "unary", "ListModels": "unary", "GetModel": "unary",
               "ModelControl": "unary", "ScoreStream": "stream", "BiasReport": "stream_unary"}
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda cut: GOOD_SCORE[:cut], st.integers(1, len(GOOD_SCORE) - 1)),  # truncated
    st.builds(lambda junk: UNDECODABLE + junk, st.binary(max_size=64)),
)


@settings(PROPERTY, max_examples=40)
@given(method=st.sampled_from(sorted(RAW_METHODS)),
       messages=st.lists(payloads, min_size=1, max_size=3))
def test_bytes_that_are_not_a_request_are_refused_as_invalid(
    served: ServerThread, method: str, messages: list[bytes]
) -> None:
    if method == "ModelControl":  # only bytes that cannot parse: no action may run
        messages = [UNDECODABLE + m for m in messages]
    path, channel = f"/{SERVICE}/{method}", served.channel
    call: Callable[[], Any] = {  # request_serializer=None: the bytes go out as they are
        "unary": lambda: channel.unary_unary(path)(messages[0], timeout=CALL_BOUND_S),
        "stream": lambda: list(channel.stream_stream(path)(iter(messages),
                                                           timeout=CALL_BOUND_S)),
        "stream_unary": lambda: channel.stream_unary(path)(iter(messages),
                                                           timeout=CALL_BOUND_S),
    }[RAW_METHODS[method]]
    code, reply = ended(call)
    if messages[0].startswith(UNDECODABLE):
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    if code == OK and method == "ListModels":
        assert {m.name for m in pb.ListModelsResponse.FromString(reply).models} == set(MODELS)
    assert_still_serving(served)


# ModelControl may not be wired into every build yet: UNIMPLEMENTED is accepted until it is.
CONTROL_ALLOWED = {*ACTIONABLE, grpc.StatusCode.UNIMPLEMENTED}


@settings(PROPERTY, max_examples=20)
@given(request=control_requests())
def test_model_control_refuses_absent_models_and_unknown_actions(
    served: ServerThread, request: pb.ModelControlRequest
) -> None:
    code, reply = ended(lambda: stub(served).ModelControl(request, timeout=CALL_BOUND_S),
                        allowed=CONTROL_ALLOWED)
    if code == OK:
        assert not reply.loaded and not reply.reloaded and not reply.unloaded
    models = stub(served).ListModels(pb.ListModelsRequest(), timeout=CALL_BOUND_S).models
    assert {m.name for m in models} == set(MODELS)
    assert_still_serving(served)

"""Bearer tokens on the real server over a real channel: who gets in, what they may call, and
what the request metrics count for refused calls."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_harness import ServerThread, server_settings

from latentwatch.cli.main import main
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import LatentwatchError, PermissionDenied, Unauthenticated
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service import auth
from latentwatch.service.auth import TokenFile, make_entry, new_token
from latentwatch.wire.bias import bias_requests
from latentwatch.wire.tensors import to_tensor

TAB, IMG = "tab-ae", "img-vae"  # the synthetic repository's models: 5 and 64 features
X_TAB = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
X_IMG = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)

# name -> (scopes, models)
GRANTS = {
    "scorer": (["score", "read"], ["*"]),
    "reader": (["read"], ["*"]),
    "tab-only": (["score", "reports", "read"], [TAB]),
}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Token name -> token; the file's path under the key "file"."""
    path = tmp_path_factory.mktemp("auth") / "tokens.jsonl"
    made = {name: new_token() for name in GRANTS}
    lines = ["# name, sha256 of the token, scopes, models"]
    lines += [make_entry(n, made[n], *GRANTS[n]).to_line() for n in GRANTS]
    path.write_text("\n".join(lines) + "\n")
    return {**made, "file": str(path)}


@pytest.fixture(scope="module")
def server(synthetic_repo: Path, tokens: dict[str, str]) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(synthetic_repo, auth_tokens=Path(tokens["file"])))
    yield running
    running.close()


def _stub(server: ServerThread) -> pb_grpc.LatentwatchStub:
    return pb_grpc.LatentwatchStub(server.channel)


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _requests(server: ServerThread, method: str, code: str) -> float:
    labels = {"method": method, "code": code}
    registry = server.running.metrics.registry
    return registry.get_sample_value("latentwatch_requests_total", labels) or 0.0


def _score(server: ServerThread, model: str, token: str | None) -> grpc.StatusCode:
    x = X_TAB if model == TAB else X_IMG
    request = pb.ScoreRequest(model_name=model, input=to_tensor(x))
    metadata = None if token is None else _bearer(token)
    return _code(lambda: _stub(server).Score(request, metadata=metadata, timeout=10))


@pytest.mark.parametrize(("who", "model", "expected"), [
    (None, TAB, "UNAUTHENTICATED"),
    ("not-a-token", TAB, "UNAUTHENTICATED"),
    ("reader", TAB, "PERMISSION_DENIED"),  # no "score" scope
    ("tab-only", IMG, "PERMISSION_DENIED"),  # another model
    ("tab-only", TAB, "OK"),
    ("scorer", IMG, "OK"),
])
def test_score_needs_a_known_token_with_the_scope_and_model(
    server: ServerThread, tokens: dict[str, str], who: str | None, model: str, expected: str
) -> None:
    token = None if who is None else tokens.get(who, who)
    before = _requests(server, "Score", expected)
    assert _score(server, model, token).name == expected
    assert _requests(server, "Score", expected) == before + 1


def test_a_malformed_authorization_header_is_unauthenticated(
    server: ServerThread, tokens: dict[str, str]
) -> None:
    request = pb.ListModelsRequest()
    for header in (tokens["reader"], f"Basic {tokens['reader']}", "Bearer "):
        code = _code(lambda h=header: _stub(server).ListModels(
            request, metadata=[("authorization", h)], timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    code = _code(lambda: _stub(server).ListModels(
        request, metadata=[("authorization", f"bearer  {tokens['reader']}")], timeout=10))
    assert code == grpc.StatusCode.OK  # the scheme is case-insensitive, as HTTP's


def test_health_is_open_and_reflection_is_off(server: ServerThread) -> None:
    reply = health_pb2_grpc.HealthStub(server.channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    assert _code(lambda: list(reflect.ServerReflectionInfo(iter([ask]), timeout=10))) == (
        grpc.StatusCode.UNIMPLEMENTED
    )


def test_score_stream_is_refused_per_model_and_counted_per_message(
    server: ServerThread, tokens: dict[str, str]
) -> None:
    stub = _stub(server)
    tab = pb.ScoreRequest(model_name=TAB, input=to_tensor(X_TAB))
    img = pb.ScoreRequest(model_name=IMG, input=to_tensor(X_IMG))
    before = _requests(server, "ScoreStream", "PERMISSION_DENIED")
    only_tab = _bearer(tokens["tab-only"])
    # The first message names a model the token may not use: nothing is scored.
    assert _code(lambda: list(stub.ScoreStream(iter([img]), metadata=only_tab, timeout=10))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # A later message switches to it: the stream ends there, after the allowed one's answer.
    replies: list[pb.ScoreResponse] = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in stub.ScoreStream(iter([tab, img, tab]), metadata=only_tab, timeout=10):
            replies.append(reply)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(replies) == 1 and replies[0].model_name == TAB
    assert _requests(server, "ScoreStream", "PERMISSION_DENIED") == before + 2
    before = _requests(server, "ScoreStream", "UNAUTHENTICATED")
    assert _code(lambda: list(stub.ScoreStream(iter([tab]), timeout=10))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert _requests(server, "ScoreStream", "UNAUTHENTICATED") == before + 1


def test_bias_reports_need_the_reports_scope(server: ServerThread, tokens: dict[str, str]) -> None:
    target = f"127.0.0.1:{server.running.port}"
    x = np.random.default_rng(2).normal(size=(200, 5)).astype(np.float32)
    with LatentwatchClient(target, token=tokens["scorer"]) as client:
        with pytest.raises(PermissionDenied, match="'reports' scope"):
            client.bias_report(TAB, x)
    with LatentwatchClient(target, token=tokens["tab-only"]) as client:
        assert client.bias_report(TAB, x).n_rows == 200
        with pytest.raises(PermissionDenied, match="model 'img-vae'"):
            client.bias_report(IMG, np.zeros((4, 64), np.float32))
    stub = _stub(server)
    before = _requests(server, "BiasReport", "UNAUTHENTICATED")
    assert _code(lambda: stub.BiasReport(bias_requests(TAB, x), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert _requests(server, "BiasReport", "UNAUTHENTICATED") == before + 1


def test_the_client_sends_its_token_from_the_argument_or_the_environment(
    server: ServerThread, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"127.0.0.1:{server.running.port}"
    with LatentwatchClient(target) as client:
        with pytest.raises(Unauthenticated, match="needs a token"):
            client.list_models()
    monkeypatch.setenv("LATENTWATCH_TOKEN", tokens["tab-only"])
    with LatentwatchClient(target) as client:
        client.wait_ready(10)
        assert client.score(TAB, X_TAB).score.shape == (3,)
        assert client.encode(TAB, X_TAB)[0].shape[0] == 3
        # Streams carry it too.
        assert len(list(client.score_stream(TAB, [X_TAB, X_TAB]))) == 2
    with LatentwatchClient(target, token=tokens["reader"]) as client:  # the argument wins
        with pytest.raises(PermissionDenied):
            client.score(TAB, X_TAB)


def test_score_cli_reads_the_token_file(
    server: ServerThread, tokens: dict[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LATENTWATCH_TOKEN", raising=False)
    data = tmp_path / "rows.npy"
    np.save(data, X_TAB)
    token_file = tmp_path / "token"
    token_file.write_text(tokens["scorer"] + "\n")
    args = ["score", "--server", f"127.0.0.1:{server.running.port}", "--model", TAB,
            "--data", str(data), "--out", str(tmp_path / "out.csv"), "--timeout", "5"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentwatch score: error:") and "needs a token" in err
    assert main([*args, "--token-file", str(token_file)]) == 0
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 4


def test_tokens_added_and_revoked_in_the_file_take_effect_while_serving(
    server: ServerThread, tokens: dict[str, str]
) -> None:
    path = Path(tokens["file"])
    original = path.read_text()
    late = new_token()
    try:
        assert _score(server, TAB, late) == grpc.StatusCode.UNAUTHENTICATED
        path.write_text(original + make_entry("late", late, ["score"]).to_line() + "\n")
        assert _score(server, TAB, late) == grpc.StatusCode.OK
        # A broken edit is refused; the tokens before it stay in force.
        path.write_text(original + "{not json\n")
        assert _score(server, TAB, late) == grpc.StatusCode.OK
        assert _score(server, TAB, tokens["scorer"]) == grpc.StatusCode.OK
        # Revoked: its line deleted.
        path.write_text(original)
        assert _score(server, TAB, late) == grpc.StatusCode.UNAUTHENTICATED
        assert _score(server, TAB, tokens["scorer"]) == grpc.StatusCode.OK
    finally:
        path.write_text(original)


def test_reflection_can_be_turned_on_with_auth_and_then_needs_read(
    synthetic_repo: Path, tokens: dict[str, str]
) -> None:
    settings = server_settings(synthetic_repo, auth_tokens=Path(tokens["file"]), reflection=True)
    running = ServerThread(settings)
    try:
        reflect = reflection_pb2_grpc.ServerReflectionStub(running.channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")

        def services(token: str | None) -> grpc.StatusCode:
            metadata = None if token is None else _bearer(token)
            return _code(lambda: list(reflect.ServerReflectionInfo(
                iter([ask]), metadata=metadata, timeout=10)))

        assert services(None) == grpc.StatusCode.UNAUTHENTICATED
        assert services(tokens["reader"]) == grpc.StatusCode.OK
    finally:
        running.close()


@pytest.mark.parametrize(("line", "problem"), [
    ('{"name": "a", "scopes": ["read"]}', "missing 'sha256'"),
    ('{"name": "a", "sha256": "zz", "scopes": ["read"]}', "non-hexadecimal"),
    ('{"name": "a", "sha256": "' + "0" * 64 + '", "scopes": ["everything"]}', "not known"),
    ("not json", "not a token entry"),
])
def test_an_unusable_token_file_stops_start_up_with_its_line(
    synthetic_repo: Path, tmp_path: Path, line: str, problem: str
) -> None:
    path = tmp_path / "tokens.jsonl"
    path.write_text("# comment\n\n" + line + "\n")
    with pytest.raises(LatentwatchError) as caught:
        ServerThread(server_settings(synthetic_repo, auth_tokens=path)).close()
    message = str(caught.value)
    assert "line 3" in message and problem in message and "\n" not in message


def test_every_entry_is_compared_whichever_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = [new_token() for _ in range(5)]
    path = tmp_path / "tokens.jsonl"
    path.write_text("".join(make_entry(f"t{i}", t, ["read"]).to_line() + "\n"
                            for i, t in enumerate(made)))
    file = TokenFile(path)
    compared: list[int] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(1)
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for token in (made[0], made[4], "unknown"):
        compared.clear()
        try:
            file.authenticate(token)
        except Unauthenticated:
            assert token == "unknown"
        assert len(compared) == 5
    assert file.authenticate(made[2]).name == "t2"
    assert "sha256" in path.read_text() and not any(t in path.read_text() for t in made)


def test_model_control_needs_the_admin_scope(
    server: ServerThread, tokens: dict[str, str]
) -> None:
    stub = _stub(server)
    reload_all = pb.ModelControlRequest(action=pb.ModelControlRequest.RELOAD)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelControl(reload_all, metadata=_bearer(tokens["scorer"]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'admin' scope" in (caught.value.details() or "")


def test_list_models_shows_a_model_limited_token_only_its_models(
    server: ServerThread, tokens: dict[str, str]
) -> None:
    def listed(who: str) -> set[str]:
        reply = _stub(server).ListModels(
            pb.ListModelsRequest(), metadata=_bearer(tokens[who]), timeout=10)
        return {m.name for m in reply.models}

    assert listed("tab-only") == {TAB}
    assert {TAB, IMG} <= listed("reader")
    code = _code(lambda: _stub(server).GetModel(
        pb.GetModelRequest(model_name=IMG), metadata=_bearer(tokens["tab-only"]), timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED

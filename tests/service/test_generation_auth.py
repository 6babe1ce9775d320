"""Generate, Traverse and Translate need the "generate" scope, and a token limited to some
models reaches only those (service/auth.py's scope table)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from gen_builder import build_generative_repo
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.auth import make_entry, new_token
from latentwatch.wire.generate import generate_request, translate_request, traverse_request

GRANTS = {
    "scorer": (["score", "read"], ["*"]),
    "artist": (["generate"], ["*"]),
    "gan-only": (["generate"], ["img-gan"]),
}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, dict]]:
    root = tmp_path_factory.mktemp("gen_auth")
    made = {name: new_token() for name in GRANTS}
    path = root / "tokens.jsonl"
    path.write_text("".join(make_entry(n, made[n], *GRANTS[n]).to_line() + "\n" for n in GRANTS))
    running = ServerThread(server_settings(build_generative_repo(root / "repo"),
                                           auth_tokens=path))
    yield running, made
    running.close()


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_the_generate_scope_and_the_token_models_are_enforced(
    tokens: tuple[ServerThread, dict[str, str]],
) -> None:
    server, made = tokens
    stub = pb_grpc.LatentwatchStub(server.channel)

    def calls(token: str, model: str) -> list[grpc.StatusCode]:
        meta = [("authorization", f"Bearer {token}")]
        return [
            _code(lambda: stub.Generate(generate_request(model, 1, seed=0), metadata=meta)),
            _code(lambda: stub.Traverse(traverse_request(model, steps=2), metadata=meta)),
            _code(lambda: stub.Translate(translate_request(model, np.zeros((1, 64), np.float32)),
                                         metadata=meta)),
        ]

    denied = grpc.StatusCode.PERMISSION_DENIED
    invalid = grpc.StatusCode.INVALID_ARGUMENT  # admitted: a gan cannot translate
    assert calls(made["scorer"], "img-gan") == [denied] * 3
    assert calls(made["artist"], "img-gan") == [grpc.StatusCode.OK] * 2 + [invalid]
    assert calls(made["gan-only"], "img-gan") == [grpc.StatusCode.OK] * 2 + [invalid]
    assert calls(made["gan-only"], "img-cgan") == [denied] * 3
    assert _code(lambda: stub.Generate(generate_request("img-gan", 1))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )

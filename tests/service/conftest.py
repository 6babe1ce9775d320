"""Fixtures: model repositories to serve, and a real server on an ephemeral port.

Integration tests run against `repo_under_test`: the synthetic repository built here, and the
exported digits models when the suite defines a `model_repo` fixture (a repository Path).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_builder import build_repo
from server_harness import RepoUnderTest, ServerThread, server_settings


@pytest.fixture(scope="session")
def synthetic_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("synthetic_repo"))


@pytest.fixture(scope="module", params=["synthetic", "exported"])
def repo_under_test(request: pytest.FixtureRequest, synthetic_repo: Path) -> RepoUnderTest:
    if request.param == "synthetic":
        return RepoUnderTest(synthetic_repo, synthetic=True)
    try:
        exported = request.getfixturevalue("model_repo")
    except pytest.FixtureLookupError:
        pytest.skip("no model_repo fixture (exported digits models) in this test suite")
    return RepoUnderTest(Path(exported), synthetic=False)


@pytest.fixture(scope="module")
def server(repo_under_test: RepoUnderTest) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(repo_under_test.path))
    yield running
    running.close()

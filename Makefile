# latentwatch: `make run` serves the default models, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The Triton contract test's own environment: nvidia-pytriton needs numpy < 2 and the system
# libpython, so a venv of the system interpreter, apart from $(VENV).
TRITON_VENV ?= .venv-triton
TRITON_PYTHON ?= /usr/bin/python3.11
REPO ?= model_repository
PORT ?= 50051
METRICS_PORT ?= 9090

.PHONY: install run bootstrap browser prometheus triton container kustomize checkov test protos lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $@

install: $(VENV)/.installed

# Trains and exports the default models (digits-vae, digits-ae, digits-gan, digits-cgan,
# digits-pix2pix; about a minute and a half) when the repository is empty, then serves.
run: install
	$(VENV)/bin/latentwatch bootstrap --repo $(REPO)
	$(VENV)/bin/latentwatch serve --repo $(REPO) --port $(PORT) --metrics-port $(METRICS_PORT)

# The bias report's screenshot test renders in headless Chromium (Debian's package); without
# it (no root, no package index) that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
		{ [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null) ; } || \
		echo "chromium could not be installed: the screenshot test will skip"

# The metrics test lints the /metrics exposition with `promtool check metrics` (Debian's
# prometheus package); without it that one test skips and says why. The same package's
# prometheus server scrapes a running latentwatch in tests/deploy/test_prometheus.py and
# test_grafana.py, and promtool checks and unit-tests deploy/prometheus/rules.yml.
prometheus:
	@command -v promtool >/dev/null 2>&1 || \
		{ [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null) ; } || \
		echo "promtool could not be installed: the promtool and Prometheus tests will skip"

# The Triton contract test runs a real tritonserver (nvidia-pytriton's) serving the exported
# graphs through deploy/triton/serve_onnx.py (about 40 s to build from a warm pip cache); when
# the environment cannot be built, that test skips and says why (the reason is kept in
# $(TRITON_VENV)/.failed).
triton: $(TRITON_VENV)/.installed

$(TRITON_VENV)/.installed:
	@rm -rf $(TRITON_VENV) && mkdir -p $(TRITON_VENV).log && \
	if $(TRITON_PYTHON) -m venv $(TRITON_VENV) >$(TRITON_VENV).log/build 2>&1 && \
		$(TRITON_VENV)/bin/pip install --quiet "nvidia-pytriton==0.7.0" "numpy<2" \
		"onnxruntime==1.31.1" >>$(TRITON_VENV).log/build 2>&1; then touch $@; \
	else mkdir -p $(TRITON_VENV) && { echo "the Triton environment could not be built from" \
		"$(TRITON_PYTHON):"; grep -v '^WARNING' $(TRITON_VENV).log/build | tail -n 3; } \
		> $(TRITON_VENV)/.failed; cat $(TRITON_VENV)/.failed; \
		echo "the Triton contract test will skip"; fi; rm -rf $(TRITON_VENV).log

# The container test (tests/deploy/test_container.py) installs the serving wheel, no extras,
# into a fresh venv offline from this wheelhouse: the serving install's wheels and the build
# backend (pip download, about 40 s, again when pyproject.toml changes). Without it that test
# installs from the package index, about a minute slower.
WHEELHOUSE := $(VENV)/wheelhouse
container: $(WHEELHOUSE)/.ready

$(WHEELHOUSE)/.ready: pyproject.toml | install
	@rm -rf $(WHEELHOUSE) && if $(PY) -m pip download --quiet --dest $(WHEELHOUSE) . \
		"setuptools>=77" wheel >$(VENV)/wheelhouse.log 2>&1; then touch $@; \
	else grep -v '^WARNING' $(VENV)/wheelhouse.log | tail -n 3; \
		echo "no wheelhouse: the container test will install from the package index"; fi

# The Kubernetes test (tests/deploy/test_k8s.py) renders deploy/k8s with `kubectl kustomize`,
# which needs the kustomize v5 that kubectl 1.27+ embeds. No package index reachable here has
# one to install (Debian's kubernetes-client is kubectl 1.20, kustomize v2; Debian has no
# kustomize package): this checks for it, and without it those tests skip and say why.
kustomize:
	@v=$$(kubectl version --client -o json 2>/dev/null | \
		sed -n 's/.*"kustomizeVersion": *"v\([0-9]*\).*/\1/p'); [ "$${v:-0}" -ge 5 ] || \
		echo "kubectl with kustomize v5+ not found: the deploy/k8s render tests will skip"

# checkov (the manifests' security scan in tests/deploy/test_k8s.py) pins many packages of its
# own, so it gets its own venv (built once: about 4 minutes on 2 cores); without it that test
# skips.
CHECKOV_VENV ?= .venv-checkov
checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed:
	@rm -rf $(CHECKOV_VENV) && $(PYTHON) -m venv $(CHECKOV_VENV) && \
		$(CHECKOV_VENV)/bin/pip install --quiet "checkov==3.3.30" && touch $@ || \
		echo "checkov could not be installed: the checkov test will skip"

test: install browser prometheus triton container kustomize checkov
	$(PY) -m pytest -q tests

# Regenerates the gRPC code and its type stubs from protos/latentwatch.proto.
protos: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos --mypy_grpc_out=protos protos/latentwatch.proto
	sed -i 's/^import latentwatch_pb2 as/from latentwatch.protos import latentwatch_pb2 as/' \
		protos/latentwatch_pb2_grpc.py
	sed -i 's/^import latentwatch_pb2 as _latentwatch_pb2$$/from latentwatch.protos import latentwatch_pb2 as _latentwatch_pb2/' \
		protos/latentwatch_pb2_grpc.pyi

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy latentwatch models export service

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/throughput.py --json benchmarks/results/throughput.json

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(CHECKOV_VENV) build *.egg-info

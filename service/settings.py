"""Server settings: one pydantic-settings class, read from `LATENTWATCH_*` environment variables.

The CLI (`latentwatch serve`) overrides a few of them with flags; per-model knobs live in each
model version's manifest, not here. Every limit the server enforces is a field here, with its
default; the README's "Limits" table lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Off by default: small runs on ONNX Runtime's thread (run_async) skip the executor's hand-offs,
# but a run there loses the intra-op parallelism (README "Performance" has the measurements).
ASYNC_MAX_ROWS_DEFAULT = 0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LATENTWATCH_", frozen=True, extra="ignore")

    repo: Path = Field(Path("model_repository"), description="model repository to serve")
    host: str = Field("127.0.0.1", description="address the gRPC server binds")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_host: str | None = Field(
        None, description="address the metrics server binds; unset = the gRPC host"
    )
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus port; 0 = ephemeral")
    http_host: str | None = Field(
        None, description="address the KServe v2 REST server binds; unset = the gRPC host"
    )
    http_port: int = Field(
        8000, ge=-1, le=65535, description="KServe v2 REST port; 0 = ephemeral, -1 = off"
    )
    max_batch_rows: int = Field(256, gt=0, description="most rows in one ONNX Runtime run")
    max_batch_delay_ms: float = Field(2.0, ge=0, description="longest a row waits for a batch")
    max_queue_rows: int = Field(
        8192, gt=0,
        description="rows queued per model version; a larger request enters in windows of half",
    )
    max_request_rows: int = Field(65536, gt=0, description="most rows in one request")
    intra_op_threads: int = Field(0, ge=0, description="ORT threads per session; 0 = usable CPUs")
    workers: int = Field(
        1, ge=1, le=256, description="server processes sharing the ports (SO_REUSEPORT); worker i "
        "serves metrics on metrics_port + i"
    )
    reuse_port: bool = Field(
        False, description="share the gRPC and REST ports with other processes (set for workers)"
    )
    ort_async_max_rows: int = Field(
        ASYNC_MAX_ROWS_DEFAULT, ge=0,
        description="ONNX Runtime runs of at most this many rows go to its own thread and end "
        "by callback, skipping the executor (0 = never; needs intra_op_threads >= 2)",
    )
    ort_cpu_arena: Literal["shared", "session", "off"] = Field(
        "shared", description="memory arena of CPU sessions: shared = one for the process, "
        "session = one per session, grown to its largest run and kept (ONNX Runtime's default),"
        " off = none; CUDA sessions keep the defaults"
    )
    ort_spin_wait: bool = Field(
        False, description="ONNX Runtime's idle pool threads spin for the next run instead of "
        "sleeping (costs a core each between runs)",
    )
    require_gpu: bool = Field(False, description="stay NOT_SERVING unless CUDA is the provider")
    # The GPU's sessions (service/gpu.py); without CUDA in use they change nothing.
    cuda_device_id: int = Field(0, ge=0, description="the CUDA device sessions run on")
    cuda_mem_limit_bytes: int = Field(
        0, ge=0, description="most bytes the CUDA memory arena of a session grows to; 0 = no limit"
    )
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kNextPowerOfTwo", description="how the CUDA memory arena grows"
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "EXHAUSTIVE", description="how cuDNN picks convolution algorithms (EXHAUSTIVE: measured "
        "once per shape, fastest after)"
    )
    cuda_copy_in_default_stream: bool = Field(
        True, description="copies on the compute stream (ONNX Runtime's safe default)"
    )
    cuda_graph_batch_sizes: tuple[Annotated[int, Field(gt=0)], ...] = Field(
        (), description="batch sizes captured as CUDA graphs over preallocated buffers (JSON "
        "list, e.g. [1,8,64,256]; a batch runs in the smallest that holds it; () = off)"
    )
    tensorrt: bool = Field(
        False, description="ask for TensorRT ahead of CUDA where the build has it"
    )
    tensorrt_cache_dir: Path | None = Field(
        None, description="where TensorRT keeps built engines and timings across restarts"
    )
    tensorrt_fp16: bool = Field(False, description="let TensorRT build FP16 engines")
    shutdown_grace_s: float = Field(10.0, ge=0, description="time in-flight requests get to end")
    max_message_bytes: int = Field(
        256 * 2**20, gt=0,
        description="largest gRPC message; requests get at most max_request_rows rows of the "
        "widest model found at start as FP64, plus 1 MiB",
    )
    log_level: str = Field("INFO", description="logging level of the server process")
    warmup: bool = Field(True, description="run every graph once before reporting SERVING")
    bias_max_rows: int = Field(
        2_000_000, gt=0,
        description="most rows in one BiasReport; memory about rows x latent_dim x 4 bytes + ids",
    )

    # Limits on what one caller can make the server hold or do.
    max_concurrent_rpcs: int = Field(
        256, gt=0, description="calls handled at once; more get RESOURCE_EXHAUSTED"
    )
    max_concurrent_bias_reports: int = Field(
        4, gt=0, description="BiasReport streams at once; more get RESOURCE_EXHAUSTED"
    )
    bias_max_group_columns: int = Field(16, gt=0, description="group columns in one BiasReport")
    bias_max_group_values: int = Field(
        1000, gt=0, description="distinct labels of one group column in one BiasReport"
    )
    bias_max_label_chars: int = Field(256, gt=0, description="longest group label or row id")
    stream_idle_timeout_s: float = Field(
        300.0, gt=0, description="a stream with no message for this long is cancelled"
    )
    keepalive_time_s: float = Field(60.0, gt=0, description="server keepalive ping interval")
    keepalive_timeout_s: float = Field(20.0, gt=0, description="wait for a keepalive ack")
    max_connection_idle_s: float = Field(
        600.0, gt=0, description="a connection with no call for this long is closed"
    )
    max_connection_age_s: float = Field(
        0.0, ge=0, description="connections are closed after this long (0 = never); lets "
        "clients rebalance across replicas"
    )
    http_max_body_bytes: int | None = Field(
        None, gt=0, description="largest REST request body, after decompression (413 past "
        "it); unset = the gRPC receive limit"
    )
    http_max_concurrent: int = Field(
        256, gt=0, description="REST requests handled at once; more get 429"
    )
    http_idle_timeout_s: float = Field(
        75.0, gt=0, description="a REST connection with no request (or an unfinished request "
        "head) for this long is closed"
    )
    http_body_timeout_s: float = Field(
        60.0, gt=0, description="a REST request body must arrive within this (408 past it)"
    )

    # Transport security: TLS on every port (gRPC and metrics), mTLS when a client CA is set.
    tls_cert: Path | None = Field(None, description="PEM server certificate chain; enables TLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle; when set, clients must present a certificate it signed"
    )
    tls_reload_s: float = Field(
        60.0, gt=0, description="how often the certificate files are checked for a change"
    )

    # Authentication: bearer tokens with scopes, hashed in a file; health stays open.
    auth_tokens: Path | None = Field(
        None, description="token file (sha256 hashes, scopes, models); unset = no authentication"
    )
    reflection: bool | None = Field(
        None, description="gRPC reflection; unset = on without authentication, off with it"
    )

    # Model files you can trust.
    max_model_file_bytes: int = Field(
        4 * 2**30, gt=0, description="largest file a manifest may list (checked before hashing)"
    )
    signing_keys: Path | None = Field(
        None, description="file of trusted ed25519 public keys (one base64 key a line)"
    )
    require_signed: bool = Field(
        False, description="refuse versions without a valid signature by a trusted key"
    )

    # Where graphs run: ONNX Runtime here, or a Triton Inference Server (service/triton_runtime.py).
    backend: Literal["onnxruntime", "triton"] = Field(
        "onnxruntime", description="what runs the graphs: onnxruntime here, or triton at triton_url"
    )
    triton_url: str = Field(
        "127.0.0.1:8001", description="Triton's gRPC HOST:PORT (backend triton)"
    )
    triton_timeout_s: float = Field(
        10.0, gt=0, description="longest one Triton inference call may take; then UNAVAILABLE"
    )
    triton_ready_timeout_s: float = Field(
        30.0, ge=0,
        description="how long loading waits for a Triton model to be ready; then it is refused",
    )
    triton_tls_ca: Path | None = Field(
        None, description="PEM CA bundle that signed Triton's certificate; unset = plaintext"
    )
    triton_health_interval_s: float = Field(
        2.0, gt=0, description="how often Triton's server and model readiness are checked "
        "while serving; health follows it"
    )

    # Hot reload: new, changed and removed versions are picked up while serving.
    reload_interval_s: float = Field(
        10.0, ge=0, description="poll the repository this often (0 = only on SIGHUP or RPC)"
    )

    @property
    def metrics_bind_host(self) -> str:
        return self.host if self.metrics_host is None else self.metrics_host

    @property
    def http_bind_host(self) -> str:
        return self.host if self.http_host is None else self.http_host

    @property
    def reflection_enabled(self) -> bool:
        return self.auth_tokens is None if self.reflection is None else self.reflection

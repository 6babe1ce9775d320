"""Server settings: one pydantic-settings class, read from `LATENTWATCH_*` environment variables.

The CLI (`latentwatch serve`) overrides a few of them with flags; per-model knobs live in each
model version's manifest, not here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LATENTWATCH_", frozen=True, extra="ignore")

    repo: Path = Field(Path("model_repository"), description="model repository to serve")
    host: str = Field("127.0.0.1", description="address the gRPC and metrics servers bind")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus port; 0 = ephemeral")
    max_batch_rows: int = Field(256, gt=0, description="most rows in one ONNX Runtime run")
    max_batch_delay_ms: float = Field(2.0, ge=0, description="longest a row waits for a batch")
    max_queue_rows: int = Field(8192, gt=0, description="rows queued per model version")
    max_request_rows: int = Field(65536, gt=0, description="most rows in one request")
    intra_op_threads: int = Field(0, ge=0, description="ORT threads per session; 0 = usable CPUs")
    require_gpu: bool = Field(False, description="stay NOT_SERVING unless CUDA is the provider")
    shutdown_grace_s: float = Field(10.0, ge=0, description="time in-flight requests get to end")
    max_message_bytes: int = Field(256 * 2**20, gt=0, description="largest gRPC message")
    log_level: str = Field("INFO", description="logging level of the server process")
    warmup: bool = Field(True, description="run every graph once before reporting SERVING")
    bias_max_rows: int = Field(
        2_000_000, gt=0,
        description="most rows in one BiasReport; memory about rows x latent_dim x 4 bytes + ids",
    )

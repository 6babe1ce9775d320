"""ModelControl messages: what a reload, load or unload changed (service/reload.py)."""

from __future__ import annotations

from collections.abc import Sequence

from latentwatch.protos import latentwatch_pb2 as pb

Key = tuple[str, str]  # (model, version)


def control_response(
    loaded: Sequence[Key],
    reloaded: Sequence[Key],
    unloaded: Sequence[Key],
    refused: Sequence[tuple[str, str, str]],  # (model, version, reason)
) -> pb.ModelControlResponse:
    def refs(keys: Sequence[Key]) -> list[pb.ModelVersionRef]:
        return [pb.ModelVersionRef(model_name=n, model_version=v) for n, v in keys]

    return pb.ModelControlResponse(
        loaded=refs(loaded),
        reloaded=refs(reloaded),
        unloaded=refs(unloaded),
        refused=[
            pb.VersionRefusal(model_name=n, model_version=v, reason=reason)
            for n, v, reason in refused
        ],
    )

"""KServe v2 over HTTP: request and response bodies <-> service/kserve.py's dataclasses.

An inference body is one JSON object, or, with the binary tensor extension, a JSON object of
`Inference-Header-Content-Length` bytes followed by the inputs' raw bytes, in input order, each
input naming its length in `parameters.binary_data_size`. Inputs carry either that or `data`
(row-major, flat or nested lists). Outputs come back as JSON `data`, or as raw bytes after the
JSON when the request asks: per output `parameters.binary_data`, else the request parameter
`binary_data_output` (tritonclient.http sets it when it names no outputs). Raw bytes use the same
codec as gRPC's raw contents (latentwatch/wire/v2_tensors.py). Shared memory and classification
outputs are refused with a message that says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from latentwatch.errors import InvalidInput, quote
from latentwatch.service.kserve import V2Request, V2Response, V2Tensor
from latentwatch.wire.tensors import checked_shape
from latentwatch.wire.v2_tensors import BYTES, from_contents, from_raw, to_raw

BINARY_HEADER = "Inference-Header-Content-Length"
BINARY_OUTPUT = "binary_data_output"  # request parameter: every output as raw bytes
BINARY_SIZE = "binary_data_size"  # input and output parameter: its raw byte length
BINARY_DATA = "binary_data"  # output parameter: this output as raw bytes
_REFUSED_PARAMETERS = {
    "shared_memory_region": "shared memory is not supported by this server; send the data",
    "shared_memory_byte_size": "shared memory is not supported by this server; send the data",
    "shared_memory_offset": "shared memory is not supported by this server; send the data",
    "classification": "classification outputs are not supported by this server",
}
Scalar = bool | int | float | str


@dataclass(frozen=True)
class InferBody:
    """A parsed inference request, with how its outputs are to be sent."""

    request: V2Request
    binary: Mapping[str, bool]  # output name -> raw bytes; outputs not named use `binary_default`
    binary_default: bool

    def is_binary(self, output: str) -> bool:
        return self.binary.get(output, self.binary_default)


def parse_json(text: bytes, what: str = "request body") -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise InvalidInput(f"{what} is not valid JSON ({err})") from None


def parse_infer(body: bytes, header_length: str | None, model: str, version: str) -> InferBody:
    """The request of a POST .../infer body; InvalidInput says what is wrong and where."""
    if header_length is None:
        head, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise InvalidInput(
                f"{BINARY_HEADER} {quote(header_length)} is not a length within the "
                f"{len(body):,}-byte body"
            )
        head, binary = body[:length], body[length:]
    document = parse_json(head, "the inference request's JSON")
    if not isinstance(document, dict):
        raise InvalidInput("the inference request's JSON is not an object")
    inputs_json = document.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise InvalidInput("the inference request has no 'inputs' list")
    inputs: list[V2Tensor] = []
    offset = 0
    for index, item in enumerate(inputs_json):
        tensor, used = _input(item, index, binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset:,} bytes after the JSON are not claimed by any input's "
            f"{BINARY_SIZE}"
        )
    parameters = dict(_parameters(document.get("parameters"), "request"))
    binary_default = parameters.pop(BINARY_OUTPUT, False)
    if not isinstance(binary_default, bool):
        raise InvalidInput(f"request parameter {BINARY_OUTPUT} must be true or false")
    names, binary_of = _outputs(document.get("outputs"))
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput("request 'id' must be a string")
    request = V2Request(
        model=model, version=version, id=request_id, inputs=tuple(inputs),
        parameters=parameters, outputs=names,
    )
    return InferBody(request, binary_of, binary_default)


def _input(item: Any, index: int, binary: bytes, offset: int) -> tuple[V2Tensor, int]:
    """One input and the raw bytes it took from `binary` at `offset`."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput(f"input {index} is not an object with a 'name'")
    name = item["name"]
    what = f"input {quote(name)}"
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"{what} has no 'datatype'")
    dims = item.get("shape")
    if not isinstance(dims, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    ):
        raise InvalidInput(f"{what}: 'shape' must be a list of integers")
    shape = checked_shape(dims, what)
    parameters = _parameters(item.get("parameters"), what)
    unknown = sorted(set(parameters) - {BINARY_SIZE})
    if unknown:
        raise InvalidInput(f"{what}: parameter {_refusal(unknown)}")
    size = parameters.get(BINARY_SIZE)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{what}: {BINARY_SIZE} must be a non-negative integer")
        if "data" in item:
            raise InvalidInput(f"{what} has both 'data' and {BINARY_SIZE}; send one")
        if offset + size > len(binary):
            raise InvalidInput(
                f"{what}: {BINARY_SIZE} {size:,} runs past the body ({len(binary) - offset:,} "
                "bytes left after the JSON and the inputs before it)"
            )
        raw = binary[offset: offset + size]
        return V2Tensor(name, datatype, shape, from_raw(raw, datatype, shape, name)), size
    if "data" not in item:
        raise InvalidInput(f"{what} has neither 'data' nor parameters.{BINARY_SIZE}")
    values = flat_data(item["data"], what)
    return V2Tensor(name, datatype, shape, from_contents(values, datatype, shape, name)), 0


def flat_data(data: Any, what: str) -> list[Any]:
    """JSON `data` as one flat row-major list; nested lists must nest evenly."""
    if not isinstance(data, list):
        raise InvalidInput(f"{what}: 'data' must be a list")
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    width = None
    for item in data:
        part = flat_data(item, what) if isinstance(item, list) else None
        if part is None or (width is not None and len(part) != width):
            raise InvalidInput(f"{what}: 'data' is not a regular nested list")
        width = len(part)
        flat.extend(part)
    return flat


def _parameters(value: Any, what: str) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(v, (bool, int, float, str)) for v in value.values()
    ):
        raise InvalidInput(f"{what} 'parameters' must be an object of booleans, numbers, strings")
    return value


def _outputs(value: Any) -> tuple[tuple[str, ...], dict[str, bool]]:
    if value is None:
        return (), {}
    if not isinstance(value, list):
        raise InvalidInput("request 'outputs' must be a list of {\"name\": ...} objects")
    names: list[str] = []
    binary: dict[str, bool] = {}
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"requested output {index} is not an object with a 'name'")
        name = item["name"]
        parameters = _parameters(item.get("parameters"), f"output {quote(name)}")
        unknown = sorted(set(parameters) - {BINARY_DATA})
        if unknown:
            raise InvalidInput(f"output {quote(name)}: parameter {_refusal(unknown)}")
        if BINARY_DATA in parameters:
            if not isinstance(parameters[BINARY_DATA], bool):
                raise InvalidInput(f"output {quote(name)}: {BINARY_DATA} must be true or false")
            binary[name] = bool(parameters[BINARY_DATA])
        names.append(name)
    return tuple(names), binary


def _refusal(names: Sequence[str]) -> str:
    return f"{quote(names[0])}: {_REFUSED_PARAMETERS.get(names[0], 'is not known')}"


def encode_infer(response: V2Response, body: InferBody) -> tuple[bytes, int | None]:
    """The response body, and the JSON's length when raw output bytes follow it (the value of
    the Inference-Header-Content-Length header); None for an all-JSON body."""
    outputs: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
        }
        if body.is_binary(tensor.name):
            data = to_raw(tensor.data)
            entry["parameters"] = {BINARY_SIZE: len(data)}
            raw.append(data)
        else:
            entry["data"] = json_data(tensor)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name, "model_version": response.model_version,
    }
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    document["outputs"] = outputs
    head = dumps(document)
    if not raw:
        return head, None
    return b"".join([head, *raw]), len(head)


def json_data(tensor: V2Tensor) -> list[Any]:
    """A tensor's values as a flat JSON list (row-major); BYTES as UTF-8 strings."""
    flat = np.asarray(tensor.data).reshape(-1)
    if tensor.datatype != BYTES:
        return list(flat.tolist())
    try:
        return [bytes(v).decode("utf-8") for v in flat]
    except UnicodeDecodeError:
        raise InvalidInput(
            f"output {quote(tensor.name)} is not UTF-8 text: ask for it with "
            f"parameters.{BINARY_DATA} true"
        ) from None


def dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def statistics_json(stats: Sequence[Any]) -> dict[str, Any]:
    """GET .../stats as Triton answers it: per version, counts and the success and failure
    time in ns (latentwatch keeps no queue or compute split, so those are left out)."""
    return {"model_stats": [
        {
            "name": s.name, "version": s.version, "last_inference": s.last_inference_ms,
            "inference_count": s.inference_count, "execution_count": s.execution_count,
            "inference_stats": {
                "success": {"count": s.success_count, "ns": s.success_ns},
                "fail": {"count": s.fail_count, "ns": s.fail_ns},
            },
            "batch_stats": [],
        }
        for s in stats
    ]}


_INT64_TYPES = frozenset({
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
})


def message_json(message: Message) -> dict[str, Any]:
    """A protobuf message (Triton's ModelConfig) as Triton's REST JSON: proto field names, and
    64-bit integers as numbers (`dims: [-1, 5]`), not the strings of protobuf's JSON mapping."""
    document = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _int64_numbers(message, document)
    return document


def _int64_numbers(message: Message, document: dict[str, Any]) -> None:
    for field, value in message.ListFields():
        if field.name not in document:
            continue
        repeated = field.is_repeated
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            mapped = document[field.name]
            for key, item in value.items():
                if value_field.message_type is not None:
                    _int64_numbers(item, mapped[str(key)])
                elif value_field.type in _INT64_TYPES:
                    mapped[str(key)] = int(mapped[str(key)])
        elif entry is not None:
            items = value if repeated else [value]
            parts = document[field.name] if repeated else [document[field.name]]
            for item, part in zip(items, parts, strict=True):
                if isinstance(part, dict):
                    _int64_numbers(item, part)
        elif field.type in _INT64_TYPES:
            raw = document[field.name]
            document[field.name] = [int(v) for v in raw] if repeated else int(raw)

"""The OpenAPI document describes every body and every status the service really sends,
with an example of each; its examples are real answers."""

from __future__ import annotations

import json
import re

import pytest
from starlette.testclient import TestClient

from service.query.buckets import INTERVALS
from service.schema import METRICS

PREFIX = "#/components/schemas/"

POSTS = [
    *(spec.path for spec in METRICS.values()),
    *(spec.path + "/batch" for spec in METRICS.values()),
    "/readings",
]


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    from service.app import create_app
    from service.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), access_log=False)
    with TestClient(create_app(settings)) as client:
        r = client.get("/openapi.json")
        assert r.status_code == 200
        return r.json()


@pytest.fixture(scope="module")
def resolve(document: dict):
    def resolve(schema: dict) -> dict:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        return resolve(document["components"]["schemas"][ref.removeprefix(PREFIX)])

    return resolve


def properties(schema: dict, resolve) -> dict:
    """The properties of a reading or record, wherever the body schema nests it."""
    schema = resolve(schema)
    if "properties" in schema and "readings" not in schema["properties"]:
        return schema["properties"]
    if "anyOf" in schema and "properties" not in schema:  # /readings: object or bare list
        return properties(schema["anyOf"][0], resolve)
    if schema.get("type") == "array":
        return properties(schema["items"], resolve)
    return properties(schema["properties"]["readings"], resolve)


def test_every_post_route_is_listed(document: dict) -> None:
    posts = sorted(path for path, ops in document["paths"].items() if "post" in ops)
    assert posts == sorted(POSTS)


@pytest.mark.parametrize("path", POSTS)
def test_every_post_declares_its_json_body_with_an_example(
    document: dict, resolve, path: str
) -> None:
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    content = body["content"]["application/json"]
    assert content["example"]
    fields = properties(content["schema"], resolve)
    assert fields["timestamp"] == {**fields["timestamp"], "type": "string", "format": "date-time"}
    assert {"user_id", "device_id", "timestamp"} <= set(fields)
    metrics = {spec.field for spec in METRICS.values()} & set(fields)
    assert metrics == (
        {spec.field for spec in METRICS.values()}
        if path == "/readings"
        else {next(s.field for s in METRICS.values() if path.startswith(s.path))}
    )


@pytest.mark.parametrize("path", POSTS)
def test_every_post_documents_the_statuses_it_sends(document: dict, path: str) -> None:
    responses = document["paths"][path]["post"]["responses"]
    assert sorted(responses) == ["202", "400", "408", "413", "503"]


def test_value_rules_are_in_the_schema(document: dict, resolve) -> None:
    body = document["paths"]["/metrics/steps"]["post"]["requestBody"]
    steps = properties(body["content"]["application/json"]["schema"], resolve)["steps"]
    assert (steps["type"], steps["minimum"], steps["maximum"]) == ("integer", 0, 100_000)
    body = document["paths"]["/readings"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    record = resolve(schema["anyOf"][1]["items"])
    assert record["required"] == ["user_id", "device_id", "timestamp"]
    assert record["anyOf"] == [{"required": [spec.field]} for spec in METRICS.values()]
    assert "default" not in record["properties"]["calories"]  # absent, not null
    assert record["properties"]["calories"]["type"] == "number"


# every GET and the statuses it really sends (errors any route may send are in the
# document's description: 405, 431, 500, 503 while a worker starts or stops)
GETS = {
    **{spec.path: ["200", "400", "404"] for spec in METRICS.values()},
    "/summary": ["200", "400", "404"],
    "/users": ["200", "400"],
    "/metrics/heart-rate/stream": ["200", "400"],
    "/metrics/steps/stream": ["200", "400"],
    "/metrics/calories/stream": ["200", "400"],
    "/users/{user_id}/export": ["200", "400", "404"],
    "/health": ["200"],
    "/ready": ["200", "503"],
    "/metrics": ["200"],
}


def operations(document: dict):
    for path, ops in document["paths"].items():
        for method, operation in ops.items():
            yield f"{method.upper()} {path}", operation


def test_no_422_anywhere(document: dict) -> None:
    assert '"422"' not in json.dumps(document)
    assert "ValidationError" not in json.dumps(document)


def test_every_get_lists_the_statuses_it_sends(document: dict) -> None:
    paths = document["paths"].items()
    assert {path: sorted(ops["get"]["responses"]) for path, ops in paths if "get" in ops} == GETS


def test_every_route_with_input_documents_its_400(document: dict) -> None:
    for name, operation in operations(document):
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in operation["responses"], name


def test_every_request_and_response_has_an_example(document: dict) -> None:
    for name, operation in operations(document):
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            for media_type, content in body.get("content", {}).items():
                assert content.get("example") is not None, (name, media_type)
        assert operation["summary"], name


def test_every_reference_resolves(document: dict) -> None:
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(document))
    assert refs
    for ref in refs:
        assert ref.removeprefix(PREFIX) in document["components"]["schemas"], ref


@pytest.mark.parametrize("spec", METRICS.values(), ids=lambda spec: spec.name)
def test_series_is_typed_per_metric(document: dict, resolve, spec) -> None:
    get = document["paths"][spec.path]["get"]
    content = get["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/csv"}
    series = resolve(content["application/json"]["schema"])
    bucket = resolve(series["properties"]["data"]["items"])
    kind = "integer" if spec.integer else "number"
    fields = bucket["properties"]
    assert fields["timestamp"] == {**fields["timestamp"], "type": "string", "format": "date-time"}
    assert fields[spec.field]["type"] == kind
    assert (fields["min"]["type"], fields["max"]["type"], fields["count"]["type"]) == (
        kind,
        kind,
        "integer",
    )
    assert sorted(bucket["required"]) == sorted(["timestamp", spec.field, "device_id"])
    params = {p["name"]: p for p in get["parameters"]}
    for name in ("start", "end"):
        assert params[name]["schema"]["format"] == "date-time"
        assert params[name]["required"] is True
    assert params["interval"]["schema"]["enum"] == list(INTERVALS)
    assert "min" in params["stats"]["description"]


def test_summary_echoes_its_range_as_date_times(document: dict, resolve) -> None:
    get = document["paths"]["/summary"]["get"]
    summary = resolve(get["responses"]["200"]["content"]["application/json"]["schema"])
    for name in ("start", "end"):
        assert summary["properties"][name]["format"] == "date-time"
    steps = resolve(summary["properties"]["steps"]["anyOf"][0])
    assert steps["properties"]["total"]["type"] == "integer"


@pytest.mark.parametrize("spec", METRICS.values(), ids=lambda spec: spec.name)
def test_series_examples_are_real_answers(client, document: dict, spec) -> None:
    example = document["paths"][spec.path]["get"]["responses"]["200"]["content"]
    answer = example["application/json"]["example"]["data"][0]
    values = [answer["min"], answer["max"]] if answer["count"] == 2 else [answer[spec.field]]
    for second, value in zip((0, 30), values, strict=False):
        reading = {
            "user_id": "user_123",
            "device_id": "device_a",
            "timestamp": f"2024-01-15T10:00:{second:02d}Z",
            spec.field: value,
        }
        assert client.post(spec.path, json=reading).status_code == 202
    query = {
        "user_id": "user_123",
        "start": "2024-01-15T10:00:00Z",
        "end": "2024-01-15T10:01:00Z",
        "stats": "min,max,count",
    }
    assert client.get(spec.path, params=query).json() == example["application/json"]["example"]
    csv = client.get(spec.path, params=query, headers={"accept": "text/csv"})
    assert csv.text == example["text/csv"]["example"]

"""The OpenAPI document describes every POST's body and the statuses it really sends."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from service.schema import METRICS

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


def properties(schema: dict) -> dict:
    """The properties of a reading or record, wherever the body schema nests it."""
    if "properties" in schema and "readings" not in schema["properties"]:
        return schema["properties"]
    if "anyOf" in schema:  # /readings: an object with a list, or a bare list
        return properties(schema["anyOf"][0])
    if schema.get("type") == "array":
        return properties(schema["items"])
    return properties(schema["properties"]["readings"])


def test_every_post_route_is_listed(document: dict) -> None:
    posts = sorted(path for path, ops in document["paths"].items() if "post" in ops)
    assert posts == sorted(POSTS)


@pytest.mark.parametrize("path", POSTS)
def test_every_post_declares_its_json_body_with_an_example(document: dict, path: str) -> None:
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    content = body["content"]["application/json"]
    assert content["example"]
    assert "$ref" not in str(content["schema"])  # inlined: nothing left to resolve
    fields = properties(content["schema"])
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


def test_value_rules_are_in_the_schema(document: dict) -> None:
    body = document["paths"]["/metrics/steps"]["post"]["requestBody"]
    steps = properties(body["content"]["application/json"]["schema"])["steps"]
    assert (steps["type"], steps["minimum"], steps["maximum"]) == ("integer", 0, 100_000)
    body = document["paths"]["/readings"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    record = schema["anyOf"][1]["items"]
    assert record["required"] == ["user_id", "device_id", "timestamp"]
    assert record["anyOf"] == [{"required": [spec.field]} for spec in METRICS.values()]
    assert "default" not in record["properties"]["calories"]  # absent, not null
    assert record["properties"]["calories"]["type"] == "number"

"""Property-based fuzzing of every operation in the OpenAPI schema: no input may produce a 5xx.

Inputs mix schema-shaped values (valid addresses, hashes, round numbers, bodies with the declared fields) with
junk (wrong types, huge numbers, odd strings), so both validation and the handlers behind it are exercised.
The run is bounded (FUZZ_EXAMPLES per operation) to keep CI fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.settings import Settings
from fedledger.service import Platform
from fedledger.stack import embedded_stack

FUZZ_EXAMPLES = 50

junk = st.one_of(
    st.text(max_size=20), st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
)
hexes = st.sampled_from(["0x" + "00" * 20, "0x8eEe9593B002b53bb57817c891293d522399A2B9", "0x" + "ab" * 32,
                         "0x" + "cd" * 65, "0x", "0xZZ", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                         "fedblob:sha256:" + "0" * 64, "../../etc/passwd", "%00", "1", "-1", "99999999999999999999999"])
param_value = st.one_of(hexes, st.integers(min_value=-5, max_value=10**20).map(str), st.text(min_size=1, max_size=12))


def body_for(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        schema = components[schema["$ref"].split("/")[-1]]
    props = schema.get("properties", {})
    if not props:
        return junk
    values = {name: st.one_of(hexes, junk, st.integers(min_value=0, max_value=10**6)) for name in props}
    return st.one_of(st.fixed_dictionaries(values), st.dictionaries(st.text(max_size=8), junk, max_size=3), junk)


def operations(app_schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in app_schema["paths"].items() for method, op in item.items()]


def fuzz(client: TestClient, ops: list[tuple[str, str, dict[str, Any]]], components: dict[str, Any],
         examples: int) -> dict[int, int]:
    """``examples`` generated requests per operation; every answer must be below 500. Returns status counts."""
    seen: dict[int, int] = {}
    headers_choices = st.sampled_from([{}, {"Authorization": "Bearer test-operator-token"}])

    for path, method, op in ops:
        names = re.findall(r"{(\w+)}", path)
        query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        json_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        raw_body = "application/octet-stream" in op.get("requestBody", {}).get("content", {})

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            path_values=st.fixed_dictionaries({n: param_value for n in names}),
            query_values=st.fixed_dictionaries({q: param_value for q in query}),
            body=body_for(json_schema, components) if json_schema else st.none(),
            raw=st.binary(max_size=64),
            headers=headers_choices,
        )
        def call(path_values: dict, query_values: dict, body: Any, raw: bytes, headers: dict) -> None:
            url = path.format(**{k: quote(v, safe='') for k, v in path_values.items()})
            kwargs: dict[str, Any] = {"params": query_values, "headers": dict(headers)}
            if json_schema is not None:
                kwargs["json"] = body
            elif raw_body:
                kwargs["content"] = raw
                kwargs["headers"]["content-type"] = "application/octet-stream"
            response = client.request(method.upper(), url, **kwargs)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (method, url, kwargs, response.status_code, response.text)

        call()
    return seen


def schema_of(client: TestClient) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[str, Any]]:
    schema = client.get("/openapi.json").json()
    return operations(schema), schema.get("components", {}).get("schemas", {})


def test_no_operation_answers_with_a_server_error(client: TestClient) -> None:
    operator = {"Authorization": "Bearer test-operator-token"}
    assert client.post("/operator/genesis", json={"dataset": "digits"}, headers=operator).status_code == 201
    assert client.post("/operator/rounds", json={"duration_s": 3600}, headers=operator).status_code == 201
    ops, components = schema_of(client)
    assert len(ops) >= 15
    seen = fuzz(client, ops, components, FUZZ_EXAMPLES)
    assert sum(seen.values()) >= FUZZ_EXAMPLES * len(ops) // 2
    print(f"fuzzed {sum(seen.values())} requests over {len(ops)} operations: {dict(sorted(seen.items()))}")


RELAY_PATHS = ("/submissions", "/receipts/", "/claims", "/flush", "/close", "/finalize", "/rounds/{round_id}")


def test_no_relay_operation_answers_with_a_server_error_in_batched_mode(tmp_path: Path) -> None:
    """The batched relay + Merkle settlement behind the same routes (tests/api/test_relay.py has the flows)."""
    platform = Platform.create(embedded_stack(tmp_path, seed=5), tmp_path / "index.sqlite", settlement="merkle",
                               relay_mode="batched", batch_size=2, queue_path=tmp_path / "relay-queue.sqlite")
    settings = Settings(operator_token="test-operator-token", state_dir=tmp_path, settlement="merkle",  # type: ignore[arg-type]
                        relay_mode="batched", flush_interval_s=0)
    operator = {"Authorization": "Bearer test-operator-token"}
    with TestClient(create_app(settings, platform)) as client:
        assert client.post("/operator/genesis", json={"dataset": "digits"}, headers=operator).status_code == 201
        assert client.post("/operator/rounds", json={"duration_s": 3600}, headers=operator).status_code == 201
        ops, components = schema_of(client)
        relay_ops = [(p, m, op) for p, m, op in ops if any(k in p for k in RELAY_PATHS)]
        assert len(relay_ops) >= 7
        seen = fuzz(client, relay_ops, components, FUZZ_EXAMPLES // 2)
    print(f"fuzzed {sum(seen.values())} batched-relay requests over {len(relay_ops)} operations: "
          f"{dict(sorted(seen.items()))}")

"""Property-based fuzzing of every operation in the OpenAPI schema: no input may produce a 5xx.

Inputs mix schema-shaped values (valid addresses, hashes, round numbers, bodies with the declared fields) with
junk (wrong types, huge numbers, odd strings), so both validation and the handlers behind it are exercised.
The run is bounded (FUZZ_EXAMPLES per operation) to keep CI fast.
"""

from __future__ import annotations

import re
from urllib.parse import quote
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_no_operation_answers_with_a_server_error(client: TestClient) -> None:
    operator = {"Authorization": "Bearer test-operator-token"}
    assert client.post("/operator/genesis", json={"dataset": "digits"}, headers=operator).status_code == 201
    assert client.post("/operator/rounds", json={"duration_s": 3600}, headers=operator).status_code == 201
    schema = client.get("/openapi.json").json()
    components = schema.get("components", {}).get("schemas", {})
    ops = operations(schema)
    assert len(ops) >= 15
    seen: dict[int, int] = {}
    headers_choices = st.sampled_from([{}, {"Authorization": "Bearer test-operator-token"}])

    for path, method, op in ops:
        names = re.findall(r"{(\w+)}", path)
        query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        json_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        raw_body = "application/octet-stream" in op.get("requestBody", {}).get("content", {})

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
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
    assert sum(seen.values()) >= FUZZ_EXAMPLES * len(ops) // 2
    print(f"fuzzed {sum(seen.values())} requests over {len(ops)} operations: {dict(sorted(seen.items()))}")

#!/usr/bin/env python3
"""Writes the facts of a published Events API OpenAPI spec that the conformance test checks
(paths, response schemas, object fields, types, formats, enum values, required keys) as JSON,
without the prose: tests/it/openapi/events-api-1.2.0.json comes from

    python3 scripts/openapi-facts.py ../shared/reference/events-api-openapi-1.2.0.yaml \
        > tests/it/openapi/events-api-1.2.0.json
"""
import json
import sys

import yaml

SCHEMA_KEYS = ("$ref", "type", "format", "enum", "required", "properties", "items", "allOf")


def facts(schema):
    if isinstance(schema, list):
        return [facts(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key in SCHEMA_KEYS:
        if key not in schema:
            continue
        value = schema[key]
        if key == "properties":
            out[key] = {name: facts(prop) for name, prop in value.items()}
        elif key in ("items", "allOf"):
            out[key] = facts(value)
        else:
            out[key] = value
    return out


def main():
    with open(sys.argv[1]) as f:
        spec = yaml.safe_load(f)
    paths = {}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = {}
            for status, response in op["responses"].items():
                if "$ref" in response:
                    responses[str(status)] = {"$ref": response["$ref"]}
            paths.setdefault(path, {})[method] = {"responses": responses}
    components = spec.get("components", {})
    responses = {}
    for name, response in components.get("responses", {}).items():
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            responses[name] = {"content": {"application/json": {"schema": facts(schema)}}}
    schemas = {name: facts(schema) for name, schema in components.get("schemas", {}).items()}
    out = {
        "source": "Events API OpenAPI " + str(spec.get("info", {}).get("version", "?")),
        "paths": paths,
        "components": {"responses": responses, "schemas": schemas},
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

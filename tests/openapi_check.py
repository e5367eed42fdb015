"""Checks of tests/openapi_embedded.rs that need a real OpenAPI validator.

Usage: python openapi_check.py DOCUMENT.json ANSWERS.json

- DOCUMENT.json (what the node serves at GET /openapi.json) must be a valid OpenAPI 3
  document (openapi-spec-validator, the version its `openapi` field names).
- ANSWERS.json is a list of {"method", "path", "status", "body"}: JSON bodies the node
  really answered. Each must validate against the schema the document gives that
  operation and status for application/json, with every object that names its
  properties closed (no field beyond the documented ones), so a handler that adds,
  drops or retypes a field fails here.

Exits non-zero with every failure listed.
"""

import copy
import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = "urn:hektor:openapi"


def closed(node, in_all_of=False):
    """Every object schema with properties (outside allOf) refuses unknown fields."""
    if isinstance(node, dict):
        if (
            not in_all_of
            and "properties" in node
            and "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
        for key, value in node.items():
            closed(value, in_all_of=(key == "allOf"))
    elif isinstance(node, list):
        for value in node:
            closed(value, in_all_of)
    return node


def absolute_refs(node):
    """`#/components/...` → `urn:hektor:openapi#/components/...`."""
    if isinstance(node, dict):
        return {
            k: (ROOT + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else absolute_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [absolute_refs(v) for v in node]
    return node


def main():
    with open(sys.argv[1]) as f:
        document = json.load(f)
    with open(sys.argv[2]) as f:
        answers = json.load(f)
    validate(copy.deepcopy(document))
    print(f"openapi {document['openapi']}: valid ({len(document['paths'])} paths)")

    strict = absolute_refs(closed(copy.deepcopy(document)))
    registry = Registry().with_resource(
        ROOT, Resource.from_contents(strict, default_specification=DRAFT202012)
    )
    failures = []
    checked = 0
    for answer in answers:
        method, path, status = answer["method"].lower(), answer["path"], str(answer["status"])
        operation = strict["paths"].get(path, {}).get(method)
        if operation is None:
            failures.append(f"{method.upper()} {path}: not in the document")
            continue
        response = operation["responses"].get(status)
        if response is None:
            failures.append(f"{method.upper()} {path}: status {status} is not documented")
            continue
        content = response.get("content", {})
        schema = next(
            (c.get("schema") for media, c in content.items() if media.split(";")[0] == "application/json"),
            None,
        )
        if schema is None:
            failures.append(f"{method.upper()} {path} {status}: no application/json schema documented")
            continue
        validator = Draft202012Validator(schema, registry=registry)
        errors = sorted(validator.iter_errors(answer["body"]), key=lambda e: list(e.absolute_path))
        for e in errors:
            failures.append(
                f"{method.upper()} {path} {status}: at {list(e.absolute_path)}: {e.message}"
            )
        checked += 1
    print(f"{checked} answers validated against their documented schemas")
    if failures:
        print("FAILURES:")
        for f in failures:
            print("  " + f)
        sys.exit(1)


if __name__ == "__main__":
    main()

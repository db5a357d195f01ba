#!/usr/bin/env python3
"""Vendors the Kubernetes JSON schemas the chart's kinds need, one self-contained file each.

Source: the PyPI package kubernetes-validate (its kubernetes-json-schema/<version>-local-strict
folder: schemas generated from Kubernetes' OpenAPI, with additionalProperties false so a
misspelt field fails). Each kind's schema is copied with the definitions it reaches, its
"/api/_definitions.json#/$defs/X" references rewritten to "#/$defs/X", descriptions dropped.

    pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv && unzip -q /tmp/kv/*.whl -d /tmp/kv
    python3 tests/chart/k8s-schemas/vendor.py /tmp/kv/kubernetes_validate/kubernetes-json-schema v1.33.0
"""
import json
import pathlib
import sys

KINDS = [
    "configmap-v1",
    "deployment-apps-v1",
    "job-batch-v1",
    "secret-v1",
    "service-v1",
    "serviceaccount-v1",
]
PREFIX = "/api/_definitions.json#/$defs/"
LOCAL = "#/$defs/"


def strip(node, reached):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description":
                continue
            if key == "$ref" and isinstance(value, str) and value.startswith((PREFIX, LOCAL)):
                name = value.split("/$defs/", 1)[1]
                reached.append(name)
                out[key] = "#/$defs/" + name
                continue
            out[key] = strip(value, reached)
        return out
    if isinstance(node, list):
        return [strip(item, reached) for item in node]
    return node


def main():
    source = pathlib.Path(sys.argv[1])
    version = sys.argv[2]
    folder = source / f"{version}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())["$defs"]
    target = pathlib.Path(__file__).parent / version
    target.mkdir(exist_ok=True)
    for kind in KINDS:
        reached = []
        schema = strip(json.loads((folder / f"{kind}.json").read_text()), reached)
        defs = {}
        while reached:
            name = reached.pop()
            if name in defs:
                continue
            defs[name] = strip(definitions[name], reached)
        schema["$defs"] = dict(sorted(defs.items()))
        schema["$comment"] = f"kubernetes-validate 1.37.0, {version}-local-strict/{kind}.json"
        (target / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(kind, len(defs), "definitions")


main()

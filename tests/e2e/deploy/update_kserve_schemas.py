"""Regenerate tests/e2e/deploy/kserve/*.schema.json from KServe's CRDs.

    python update_kserve_schemas.py <kserve-checkout>

Reads config/crd/full/serving.kserve.io_{clusterservingruntimes,inferenceservices}.yaml,
keeps the openAPIV3Schema of the served storage version, drops `description`s, and for
InferenceService keeps only `spec.predictor` in full (transformer, explainer and canary
become plain objects: our examples do not use them). Needs PyYAML.
"""
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent / "kserve"
CRDS = {
    "clusterservingruntimes": ("ClusterServingRuntime", None),
    "inferenceservices": ("InferenceService", ["predictor"]),
}


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(checkout: Path) -> None:
    for plural, (kind, keep) in CRDS.items():
        crd = yaml.safe_load((checkout / "config/crd/full" /
                              f"serving.kserve.io_{plural}.yaml").read_text())
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        schema = strip(version["schema"]["openAPIV3Schema"])
        if keep:
            spec = schema["properties"]["spec"]["properties"]
            for name in list(spec):
                if name not in keep:
                    spec[name] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        out = {"apiVersion": f"{crd['spec']['group']}/{version['name']}", "kind": kind,
               "schema": schema}
        (HERE / f"{plural}.schema.json").write_text(
            json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Regenerate tests/e2e/deploy/prometheus-operator/*.schema.json from the
Prometheus operator's CRDs (the ServiceMonitor, PodMonitor and PrometheusRule
that deploy/monitoring/ uses).

    python update_prometheus_operator_schemas.py <prometheus-operator-checkout>

Reads example/prometheus-operator-crd/monitoring.coreos.com_<plural>.yaml, keeps the
openAPIV3Schema of the served storage version and drops `description`s. Needs PyYAML.
The files in the repository come from the operator's v0.93.0 tag.
"""
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent / "prometheus-operator"
CRDS = {"servicemonitors": "ServiceMonitor", "podmonitors": "PodMonitor",
        "prometheusrules": "PrometheusRule"}


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(checkout: Path) -> None:
    HERE.mkdir(exist_ok=True)
    for plural, kind in CRDS.items():
        crd = yaml.safe_load((checkout / "example/prometheus-operator-crd" /
                              f"monitoring.coreos.com_{plural}.yaml").read_text())
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        out = {"apiVersion": f"{crd['spec']['group']}/{version['name']}", "kind": kind,
               "schema": strip(version["schema"]["openAPIV3Schema"])}
        (HERE / f"{plural}.schema.json").write_text(
            json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

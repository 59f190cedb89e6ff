"""Validators for deploy/, run with the deploy venv's Python (ci/install.sh creates it
with kubernetes-validate, jsonschema, PyYAML, hadolint, helm-python-sdk, promql-parser
and grafana-foundation-sdk; see docs/deploy.md).

    validate.py k8s FILE...          every document against the Kubernetes schemas (strict)
    validate.py kserve FILE...       KServe resources against kserve/*.schema.json (strict)
    validate.py monitoring FILE...   Prometheus operator resources (ServiceMonitor, PodMonitor,
                                     PrometheusRule) against prometheus-operator/*.schema.json
                                     (strict), every rule's expression parsed as PromQL
    validate.py grafana FILE         a dashboard decoded and re-encoded by Grafana's own
                                     foundation SDK: a field its schema does not know, or a
                                     value it does not keep, is an error; every query parsed
                                     as PromQL
    validate.py helm OVERLAY         overlay keys against Triton's chart values, then the
                                     chart's Deployment rendered with them by Helm itself
                                     (Helm's Go SDK through helm-python-sdk's libhelm_c,
                                     as `helm template` renders it), validated strictly

The chart (triton-k8s-onprem/) keeps Triton's Chart.yaml, values.yaml and
templates/deployment.yaml; its names come from templates/_names.tpl, ours, in
place of the chart's _helpers.tpl.

Prints a JSON object on stdout: {"errors": [...], "rendered": <helm only>, "renderer":
<helm only>, "selectors": <monitoring and grafana: every PromQL expression's selectors
["selector", metric, [matcher labels]] and groupings ["by", [metrics], [labels]]>};
exits 1 when there are errors.
"""
import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE / "triton-k8s-onprem"
K8S_VERSION = "1.30.0"


def docs(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]


def check_k8s_doc(doc, where):
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{where}: {doc.get('kind')}: {path}: {e.message}"]
    except Exception as e:  # unknown kind/apiVersion, ...
        return [f"{where}: {doc.get('kind')}: {type(e).__name__}: {e}"]
    return []


def strictify(node):
    """Unknown fields are errors (what `kubectl apply --validate=strict` reports)."""
    if isinstance(node, dict):
        node = {k: strictify(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strictify(v) for v in node]
    return node


def crd_schemas(folder):
    out = {}
    for f in (HERE / folder).glob("*.schema.json"):
        s = json.loads(f.read_text())
        out[(s["apiVersion"], s["kind"])] = jsonschema.Draft7Validator(strictify(s["schema"]))
    return out


def check_crds(paths, folder, owner):
    """Custom resources against the CRD schemas kept in `folder` (strict)."""
    schemas, errors = crd_schemas(folder), []
    for p in paths:
        for doc in docs(p):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in schemas:
                errors.append(f"{p}: no {owner} schema for {key}")
                continue
            for e in schemas[key].iter_errors(doc):
                path = ".".join(str(x) for x in e.absolute_path)
                errors.append(f"{p}: {doc['kind']}: {path}: {e.message}")
    return errors


def check_kserve(paths):
    return check_crds(paths, "kserve", "KServe")


# Grafana's interval variables are not PromQL: a duration stands in for them.
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")


def promql(expr, where, errors, selectors):
    """Parses `expr`; records its vector selectors ["selector", metric, matcher
    labels] and its aggregations' groupings ["by", metrics below, labels]."""
    import promql_parser
    for var in GRAFANA_INTERVALS:
        expr = expr.replace(var, "5m")
    try:
        ast = promql_parser.parse(expr)
    except Exception as e:  # the parser's own error type, with the position
        errors.append(f"{where}: not PromQL: {e}")
        return

    def names_below(node):
        found = []

        def visit(n):
            if isinstance(n, promql_parser.VectorSelector):
                found.append(n.name)
            return True
        promql_parser.walk(node, visit)
        return sorted(set(found))

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            labels = sorted({m.name for m in node.matchers.matchers} - {"__name__"})
            selectors.append(["selector", node.name, labels])
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None \
                and node.modifier.type == promql_parser.AggModifierType.By:
            selectors.append(["by", names_below(node), sorted(node.modifier.labels)])
        return True
    promql_parser.walk(ast, visit)


def check_monitoring(paths):
    errors = check_crds(paths, "prometheus-operator", "Prometheus operator")
    selectors = []
    for p in paths:
        for doc in docs(p):
            if doc.get("kind") != "PrometheusRule":
                continue
            for group in doc.get("spec", {}).get("groups", []):
                for rule in group.get("rules", []):
                    name = rule.get("alert") or rule.get("record")
                    promql(str(rule.get("expr", "")), f"{p}: {group.get('name')}/{name}",
                           errors, selectors)
    return errors, selectors


def unkept(original, decoded, path=""):
    """Where the decoded dashboard lost or changed what the original says."""
    if isinstance(original, dict):
        if not isinstance(decoded, dict):
            return [f"{path or '.'}: became {type(decoded).__name__}"]
        out = []
        for k, v in original.items():
            if k not in decoded:
                out.append(f"{path}.{k}: not a field of Grafana's dashboard schema")
            else:
                out += unkept(v, decoded[k], f"{path}.{k}")
        return out
    if isinstance(original, list):
        if not isinstance(decoded, list) or len(original) != len(decoded):
            return [f"{path}: list not kept"]
        return [e for i, (a, b) in enumerate(zip(original, decoded))
                for e in unkept(a, b, f"{path}[{i}]")]
    same = original == decoded or (
        isinstance(original, (int, float)) and isinstance(decoded, (int, float))
        and float(original) == float(decoded))
    return [] if same else [f"{path}: {original!r} became {decoded!r}"]


def check_grafana(path):
    from grafana_foundation_sdk.cog import encoder, plugins
    from grafana_foundation_sdk.models import dashboard
    plugins.register_default_plugins()
    original = json.loads(Path(path).read_text())
    try:
        decoded = dashboard.Dashboard.from_json(original)
    except Exception as e:
        return [f"{path}: Grafana's SDK cannot read it: {type(e).__name__}: {e}"], []
    again = json.loads(json.dumps(decoded, cls=encoder.JSONEncoder))
    errors = [f"{path}: {e}" for e in unkept(original, again)]
    selectors = []
    for panel in original.get("panels", []):
        for t in panel.get("targets", []):
            promql(t.get("expr", ""), f"{path}: panel {panel.get('title')!r} {t.get('refId')}",
                   errors, selectors)
    if not any(p.get("targets") for p in original.get("panels", [])):
        errors.append(f"{path}: no panel has a query")
    return errors, selectors


def unknown_keys(overlay, defaults, prefix=""):
    """Keys of the overlay the chart does not have (Helm ignores those silently)."""
    out = []
    for k, v in overlay.items():
        if k not in defaults:
            out.append(prefix + k)
        elif isinstance(v, dict) and isinstance(defaults[k], dict):
            out += unknown_keys(v, defaults[k], f"{prefix}{k}.")
    return out


def render(overlay):
    """The chart's manifests rendered by Helm with `overlay` as the user's values
    (release "rustpy" in namespace "default"): {template path: text}."""
    import helm_python  # the deploy venv has it (ci/install.sh)
    chart = helm_python.Chart.load(str(CHART))
    return chart.render(values=overlay, name="rustpy", namespace="default", is_install=True)


def check_helm(overlay_path):
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    overlay = yaml.safe_load(Path(overlay_path).read_text())
    errors = [f"{overlay_path}: `{k}` is not a value of the chart"
              for k in unknown_keys(overlay, defaults)]
    import helm_python
    try:
        manifests = render(overlay)
    except helm_python.HelmError as e:
        return errors + [f"{overlay_path}: helm could not render the chart: {e}"], None
    rendered = yaml.safe_load(manifests["triton-inference-server/templates/deployment.yaml"])
    errors += check_k8s_doc(rendered, f"{overlay_path} (rendered deployment.yaml)")
    return errors, rendered


def helm_version():
    import helm_python
    return f"helm {helm_python.helm_sdk_version()} (helm-python-sdk {helm_python.__version__})"


def main(argv):
    mode, paths = argv[0], argv[1:]
    out = {"errors": []}
    if mode == "k8s":
        for p in paths:
            for doc in docs(p):
                out["errors"] += check_k8s_doc(doc, p)
    elif mode == "kserve":
        out["errors"] = check_kserve(paths)
    elif mode == "monitoring":
        out["errors"], out["selectors"] = check_monitoring(paths)
    elif mode == "grafana":
        out["errors"], out["selectors"] = check_grafana(paths[0])
    elif mode == "helm":
        out["errors"], out["rendered"] = check_helm(paths[0])
        out["renderer"] = helm_version()
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

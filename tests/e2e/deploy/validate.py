"""Validators for deploy/, run with the deploy venv's Python (ci/install.sh creates it
with kubernetes-validate, jsonschema, PyYAML, hadolint and helm-python-sdk; see
docs/deploy.md).

    validate.py k8s FILE...          every document against the Kubernetes schemas (strict)
    validate.py kserve FILE...       KServe resources against kserve/*.schema.json (strict)
    validate.py helm OVERLAY         overlay keys against Triton's chart values, then the
                                     chart's Deployment rendered with them by Helm itself
                                     (Helm's Go SDK through helm-python-sdk's libhelm_c,
                                     as `helm template` renders it), validated strictly

The chart (triton-k8s-onprem/) keeps Triton's Chart.yaml, values.yaml and
templates/deployment.yaml; its names come from templates/_names.tpl, ours, in
place of the chart's _helpers.tpl.

Prints a JSON object on stdout: {"errors": [...], "rendered": <helm only>, "renderer":
<helm only>}; exits 1 when there are errors.
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


def kserve_schemas():
    out = {}
    for f in (HERE / "kserve").glob("*.schema.json"):
        s = json.loads(f.read_text())
        out[(s["apiVersion"], s["kind"])] = jsonschema.Draft7Validator(strictify(s["schema"]))
    return out


def check_kserve(paths):
    schemas, errors = kserve_schemas(), []
    for p in paths:
        for doc in docs(p):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in schemas:
                errors.append(f"{p}: no KServe schema for {key}")
                continue
            for e in schemas[key].iter_errors(doc):
                path = ".".join(str(x) for x in e.absolute_path)
                errors.append(f"{p}: {doc['kind']}: {path}: {e.message}")
    return errors


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
    elif mode == "helm":
        out["errors"], out["rendered"] = check_helm(paths[0])
        out["renderer"] = helm_version()
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

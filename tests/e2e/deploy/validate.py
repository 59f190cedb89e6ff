"""Validators for deploy/, run with the deploy venv's Python (ci/install.sh creates it
with kubernetes-validate, jsonschema, PyYAML and hadolint; see docs/deploy.md).

    validate.py k8s FILE...          every document against the Kubernetes schemas (strict)
    validate.py kserve FILE...       KServe resources against kserve/*.schema.json (strict)
    validate.py helm OVERLAY         overlay keys against Triton's chart values, then the
                                     chart's Deployment rendered with them, validated strictly

Prints a JSON object on stdout: {"errors": [...], "rendered": <helm only>}; exits 1 when
there are errors.
"""
import copy
import json
import re
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


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(template, values, release="rustpy", namespace="default"):
    """The chart's deployment.yaml with Helm's semantics for the constructs it uses."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    name = (values.get("nameOverride") or chart["name"])[:63].rstrip("-")
    full = values.get("fullnameOverride") or (
        release if name in release else f"{release}-{name}")
    names = {"triton-inference-server.name": name,
             "triton-inference-server.fullname": full[:63].rstrip("-"),
             "triton-inference-server.chart": f"{chart['name']}-{chart['version']}"}

    def lookup(dotted):
        node = {"Values": values, "Release": {"Name": release, "Namespace": namespace,
                                              "Service": "Helm"},
                "Chart": {"Name": chart["name"], "Version": chart["version"]}}
        for part in dotted.strip(".").split("."):
            node = node[part]
        return node

    text = "\n".join(line for line in template.splitlines() if not line.startswith("#"))
    # {{- trims the whitespace before it, -}} the whitespace after it.
    text = re.sub(r"\s*\{\{-", "{{", text)
    text = re.sub(r"-\}\}\s*", "}}", text)

    def ranges(m):
        return "".join(m.group(2).replace("{{ . }}", str(item)) for item in lookup(m.group(1)))
    text = re.sub(r"\{\{ range (\S+) \}\}(.*?)\{\{ end \}\}", ranges, text, flags=re.S)
    text = re.sub(r'\{\{ template "([^"]+)" \. \}\}', lambda m: names[m.group(1)], text)
    text = re.sub(r"\{\{ (\.[A-Za-z.]+) \}\}", lambda m: str(lookup(m.group(1))), text)
    if "{{" in text:
        raise ValueError("unsupported template construct: "
                         + text[text.index("{{"):text.index("{{") + 60])
    return yaml.safe_load(text)


def check_helm(overlay_path):
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    overlay = yaml.safe_load(Path(overlay_path).read_text())
    errors = [f"{overlay_path}: `{k}` is not a value of the chart"
              for k in unknown_keys(overlay, defaults)]
    values = merge(defaults, overlay)
    rendered = render((CHART / "templates" / "deployment.yaml").read_text(), values)
    errors += check_k8s_doc(rendered, f"{overlay_path} (rendered deployment.yaml)")
    return errors, rendered


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
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

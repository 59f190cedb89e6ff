# What `rustpy env` installs, decided in the serving interpreter (the one
# running this script): pip resolves the merged requirements against what that
# interpreter has installed, with every one of its distributions pinned as a
# constraint (its numpy above all is what the server imports: a second copy in
# the target would be shadowed by it, and packages built against another numpy
# would not load), so what pip would install is exactly what the target needs.
# Nothing is installed here.
# Input (stdin, JSON): {"requirements": PATH, "pip_args": [...]}
# Output (stdout, JSON): {"python": VERSION, "install": ["NAME==VERSION"...],
#   "error": null | PIP'S MESSAGE, "fixed": ["NAME==VERSION"...]}
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tempfile

try:
    from packaging.utils import canonicalize_name
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.utils import canonicalize_name


def main():
    req = json.load(sys.stdin)
    have = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name and dist.version:
            have.setdefault(canonicalize_name(name), (name, dist.version))
    out = {"python": sys.version.split()[0], "install": [], "error": None,
           "fixed": sorted(f"{n}=={v}" for n, v in have.values())}
    with tempfile.TemporaryDirectory(prefix="rustpy-env-") as tmp:
        constraints = os.path.join(tmp, "constraints.txt")
        with open(constraints, "w") as f:
            f.write("".join(f"{n}=={v}\n" for n, v in have.values()))
        report = os.path.join(tmp, "report.json")
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run",
                            "--no-input", "--disable-pip-version-check", "--report", report,
                            "-c", constraints, "-r", req["requirements"], *req["pip_args"]],
                           capture_output=True, text=True)
        if p.returncode != 0:
            # pip's own explanation ("The conflict is caused by: ... The user
            # requested (constraint) numpy==1.24.2") and its ERROR lines.
            text = p.stdout + "\n" + p.stderr
            keep = [ln for ln in text.splitlines()
                    if ln.startswith("ERROR") or ln.startswith("    ") or "conflict is caused by" in ln]
            out["error"] = "\n".join(keep).strip() or text.strip()
        else:
            with open(report) as f:
                for item in json.load(f).get("install", []):
                    name, version = item["metadata"]["name"], item["metadata"]["version"]
                    # Never one the interpreter has (the constraints pin those).
                    if canonicalize_name(name) not in have:
                        out["install"].append(f"{name}=={version}")
    json.dump(out, sys.stdout)


main()

# Finds packages in site-packages directories (`rustpy check --site-packages`)
# that will not load next to the serving interpreter's numpy. The server
# imports numpy from the interpreter before it puts such a directory first on
# sys.path, so: a numpy copy in the directory is never used, and a package
# built against another numpy C-API fails at import. Each package that depends
# on numpy is imported in that same order in a child process.
# Input (stdin, JSON): {"site_packages": [DIR...]}
# Output (stdout, JSON): {"diagnostics": [...]}
import importlib.metadata as md
import json
import re
import subprocess
import sys

ABI = re.compile(r"compiled (against|using) NumPy|C-API version|numpy\S*\.multiarray failed to import"
                 r"|_ARRAY_API not found|ABI version", re.I)
PROBE = r"""
import site, sys
import numpy  # the interpreter's, as in the server
d = sys.argv[1]
before = list(sys.path)
site.addsitedir(d)
sys.path[:] = [p for p in sys.path if p not in before] + before
__import__(sys.argv[2])
"""


def top_levels(dist):
    text = dist.read_text("top_level.txt")
    names = text.split() if text else []
    if not names:
        for f in dist.files or []:
            first = f.parts[0]
            if first.endswith(".py"):
                first = first[:-3]
            if "." not in first and "-" not in first and first not in names:
                names.append(first)
    return [n for n in names if n.isidentifier() and not n.startswith("_")]


def main():
    req = json.load(sys.stdin)
    out = []
    try:
        import numpy
        running = numpy.__version__
    except ImportError:
        running = None
    for d in req["site_packages"]:
        dists = list(md.distributions(path=[d]))
        for dist in dists:
            name = dist.metadata["Name"] or ""
            if name.lower() == "numpy" and running and dist.version != running:
                out.append({"file": d, "code": "site-packages.numpy-shadowed",
                            "message": f"{d} holds numpy {dist.version}, but the server imports the serving "
                                       f"interpreter's numpy {running} first: this copy is never used, and "
                                       "packages built against it may not load",
                            "hint": "remove it and reinstall with `rustpy env`, which keeps the interpreter's numpy"})
        if running is None:
            continue
        for dist in dists:
            requires = dist.requires or []
            if not any(re.match(r"numpy\b", r.strip(), re.I) for r in requires):
                continue
            for top in top_levels(dist)[:3]:
                p = subprocess.run([sys.executable, "-I", "-B", "-c", PROBE, d, top],
                                   capture_output=True, text=True, timeout=300)
                if p.returncode == 0:
                    continue
                lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
                abi = [ln for ln in lines if ABI.search(ln)]
                if abi:
                    out.append({"file": d, "code": "site-packages.numpy-abi",
                                "message": f"{dist.metadata['Name']} {dist.version} (import {top}) was built "
                                           f"against another NumPy C-API than the serving interpreter's numpy "
                                           f"{running}: {abi[0].strip()}",
                                "hint": "install a version built for it: `rustpy env` resolves with the "
                                        "interpreter's numpy fixed"})
                else:
                    out.append({"file": d, "code": "site-packages.import", "warning": True,
                                "message": f"{dist.metadata['Name']} {dist.version}: import {top} fails next to "
                                           f"the serving interpreter: {(lines or ['?'])[-1].strip()}",
                                "hint": ""})
                break
    json.dump({"diagnostics": out}, sys.stdout)


main()

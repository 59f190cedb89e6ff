# Checks the requirements.txt of every in-process model against each other and
# against the serving interpreter (the one running this script), without
# installing or importing anything. Input (stdin, JSON):
#   {"site_packages": [DIR...], "files": [{"model": NAME, "path": PATH}]}
# Output (stdout, JSON): {"diagnostics": [...], "merged": [REQUIREMENT LINE...],
#   "needed": [the lines not satisfied yet], "python": VERSION}
import importlib.metadata as md
import json
import sys

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip vendors packaging; Debian's python3.11 has pip
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

HINT_INSTALL = ("install it into the serving interpreter, or run `rustpy env REPO --target DIR` "
                "and serve with --backend-config=rustpy,site-packages=DIR "
                "(then check with --site-packages DIR)")


def main():
    req = json.load(sys.stdin)
    out = []

    def diag(severity, path, line, code, message, hint=""):
        out.append({"severity": severity, "file": path, "line": line, "code": code,
                    "message": message, "hint": hint})

    installed = {}
    for dist in md.distributions(path=list(req["site_packages"]) + sys.path):
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(canonicalize_name(name), dist.version)

    entries = []  # (model, path, line, Requirement, text)
    merged = []
    for f in req["files"]:
        try:
            with open(f["path"], encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError as e:
            diag("error", f["path"], None, "requirements.unreadable", str(e))
            continue
        for no, raw in enumerate(lines, 1):
            text = raw.split(" #", 1)[0].strip()
            if not text or text.startswith("#"):
                continue
            if text.startswith("-"):
                diag("warning", f["path"], no, "requirements.option",
                     f"pip option line not checked: {text}",
                     "list requirements one per line; options such as -r/-e/--index-url "
                     "are not merged across models")
                continue
            try:
                r = Requirement(text)
            except InvalidRequirement as e:
                diag("error", f["path"], no, "requirements.syntax",
                     f"not a valid requirement: {e}", "use PEP 508 syntax, e.g. numpy>=1.24,<2")
                continue
            if r.marker is not None and not r.marker.evaluate():
                continue
            if text not in merged:
                merged.append(text)
            if r.url:
                diag("warning", f["path"], no, "requirements.url",
                     f"URL requirement {r.name} is not checked", "")
                continue
            entries.append((f["model"], f["path"], no, r, text))

    # (a) pins that conflict between models: two models' specifiers that no
    # version satisfies together (candidates: every version either names, just
    # above each, and the installed one).
    def candidates(group, name):
        out = set()
        for e in group:
            for spec in e[3].specifier:
                base = spec.version.rstrip(".*")
                for v in (base, base + ".1"):
                    try:
                        out.add(Version(v))
                    except InvalidVersion:
                        pass
        if name in installed:
            try:
                out.add(Version(installed[name]))
            except InvalidVersion:
                pass
        return out

    by_name = {}
    for e in entries:
        by_name.setdefault(canonicalize_name(e[3].name), []).append(e)
    for name, group in sorted(by_name.items()):
        clashes = {}
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a[0] == b[0] or not len(a[3].specifier) or not len(b[3].specifier):
                    continue
                cands = candidates([a, b], name)
                if any(a[3].specifier.contains(v, prereleases=True)
                       and b[3].specifier.contains(v, prereleases=True) for v in cands):
                    continue
                clashes.setdefault(id(a), (a, []))[1].append(b)
                clashes.setdefault(id(b), (b, []))[1].append(a)
        for e, others in clashes.values():
            listing = ", ".join(f"{o[0]}: {o[4]}" for o in others)
            diag("error", e[1], e[2], "requirements.conflict",
                 f"{e[4]} conflicts with {listing}: all models share one interpreter, "
                 f"so one version of {e[3].name} must satisfy every model",
                 f"agree on one version range for {e[3].name} across the models")

    # (b) what the serving interpreter does not satisfy.
    needed = []
    for model, path, no, r, text in entries:
        have = installed.get(canonicalize_name(r.name))
        if (have is None or (len(r.specifier) and not r.specifier.contains(
                have, prereleases=True))) and text not in needed:
            needed.append(text)
        if have is None:
            diag("error", path, no, "requirements.missing",
                 f"{text}: {r.name} is not installed for the serving Python "
                 f"({sys.executable} {sys.version.split()[0]})", HINT_INSTALL)
        elif len(r.specifier) and not r.specifier.contains(have, prereleases=True):
            diag("error", path, no, "requirements.unsatisfied",
                 f"{text} is not satisfied: {r.name} {have} is installed "
                 f"({sys.executable})", HINT_INSTALL)

    json.dump({"diagnostics": out, "merged": merged, "needed": needed,
               "python": sys.version.split()[0]}, sys.stdout)


main()

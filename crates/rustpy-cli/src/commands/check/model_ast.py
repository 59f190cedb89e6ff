# Embedded in `rustpy check`: inspects model.py files WITHOUT importing them
# (importing would run the user's code and need its dependencies).
# stdin: JSON list of paths. stdout: JSON list, one result per path.
import ast
import json
import sys


def positional_params(fn):
    args = fn.args
    return len(args.posonlyargs) + len(args.args), args.vararg is not None


def is_generator(fn):
    # yield inside nested functions/classes/lambdas does not count.
    stack = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def describe_class(node):
    methods = {}
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            count, varargs = positional_params(item)
            methods[item.name] = {
                "line": item.lineno,
                "col": item.col_offset + 1,
                "positional": count,
                "varargs": varargs,
                "generator": is_generator(item),
                "is_async": isinstance(item, ast.AsyncFunctionDef),
            }
    return {
        "line": node.lineno,
        "col": node.col_offset + 1,
        "bases": len(node.bases),
        "methods": methods,
    }


def inspect_file(path):
    result = {"path": path, "classes": {}}
    try:
        with open(path, "rb") as f:
            source = f.read()
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        result["error"] = {
            "message": e.msg,
            "line": e.lineno,
            "col": e.offset,
            "kind": type(e).__name__,
        }
        return result
    except (ValueError, OSError) as e:  # null bytes, unreadable file
        result["error"] = {"message": str(e), "line": None, "col": None, "kind": type(e).__name__}
        return result
    # Only module-level names are visible to the backend; the last
    # definition wins, as at import time. Names bound some other way
    # (`Model = Other`, `from x import Model`) can't be checked statically.
    bound = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            result["classes"][node.name] = describe_class(node)
            bound.discard(node.name)
        else:
            for name in bound_names(node):
                result["classes"].pop(name, None)
                bound.add(name)
    result["other_bindings"] = sorted(bound)
    return result


def bound_names(node):
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    elif isinstance(node, (ast.If, ast.Try, ast.With)):
        # Conditional definitions: treat every name bound inside as unknown.
        names = []
        for child in ast.walk(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names.append(child.name)
            elif child is not node and isinstance(child, ast.stmt):
                names.extend(bound_names(child))
        return names
    else:
        return []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def main():
    paths = json.load(sys.stdin)
    json.dump([inspect_file(p) for p in paths], sys.stdout)


main()

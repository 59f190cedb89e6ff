"""A module next to model.py, imported relatively (`from . import file2`)."""
NAME = "file2 (version directory)"


def twice(x):
    return 2 * x

"""A sibling module of model.py (the version directory is on sys.path)."""


def scale(x):
    return x * 10


HELPER_NAME = "helper"

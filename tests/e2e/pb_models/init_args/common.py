"""A module in the model directory (also on sys.path for model.py)."""

COMMON_VALUE = 7

# A module of a namespace package (no __init__.py) shipped next to the model.
NAME = "nsmod-1"

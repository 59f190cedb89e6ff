"""A module in the model directory, imported with `import file1`."""
NAME = "file1 (model directory)"

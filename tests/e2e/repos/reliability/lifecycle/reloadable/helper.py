# A sibling module in the model directory (imported by 1/model.py as `helper`).
NAME = "helper-1"
OFFSET = 1.0

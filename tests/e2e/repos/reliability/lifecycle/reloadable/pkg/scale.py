# A module of a regular package shipped next to the model.
FACTOR = 10.0

WHO = "b"
# Deliberately different API from iso_a's utils.py.
SCALE = 3

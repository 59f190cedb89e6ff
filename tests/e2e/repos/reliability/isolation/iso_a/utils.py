WHO = "a"


def answer():
    return "utils of iso_a"

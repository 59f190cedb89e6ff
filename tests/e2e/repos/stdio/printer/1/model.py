"""Prints to stdout and stderr from every entry point (the batched API)."""
import sys


class Model:
    def initialize(self, ctx):
        print("printer: initialize on stdout")
        print("printer: initialize on stderr", file=sys.stderr)

    def predict(self, inputs):
        x = int(inputs["X"][0])
        print("printer: predict %d on stdout" % x)
        print("printer: predict %d on stderr" % x, file=sys.stderr)
        return {"Y": inputs["X"]}

    def finalize(self):
        print("printer: finalize on stdout")
        # No newline: only a flush at unload gets this out.
        print("printer: finalize without newline", end="")

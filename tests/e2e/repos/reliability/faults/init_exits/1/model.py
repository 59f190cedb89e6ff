import sys


class Model:
    def initialize(self, ctx):
        sys.exit("init_exits: exiting from initialize")

    def predict(self, inputs):
        return {"Y": inputs["X"]}

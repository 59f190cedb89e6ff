import os


class Model:
    def initialize(self, ctx):
        os._exit(5)

    def predict(self, inputs):
        return {"Y": inputs["X"]}

class Model:
    def initialize(self, ctx):
        raise RuntimeError("initialize refuses: missing weights for %s" % ctx.model_name)

    def predict(self, inputs):
        return {"Y": inputs["X"]}

class Model:
    def initialize(self, ctx):
        raise RuntimeError(f"init_raises refuses to start (model dir {ctx.model_dir})")

    def predict(self, inputs):
        return {"OUT": inputs["IN"]}

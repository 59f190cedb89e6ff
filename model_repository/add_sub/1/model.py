"""add_sub: the "hello world" of Triton models, written against rustpy's batched API.

Every predict() call gets the inputs of *all* requests that the dynamic batcher
grouped together, stacked along dim 0, so the model is plain vectorised numpy:

    INPUT0: float32 [batch, 4]    INPUT1: float32 [batch, 4]
    OUTPUT0 = INPUT0 + INPUT1     OUTPUT1 = INPUT0 - INPUT1

rustpy slices the returned rows back to the requests they came from.
"""


class Model:
    def initialize(self, ctx):
        print(f"[{ctx.model_name}] initialized: instance {ctx.instance_name} "
              f"({ctx.instance_kind}), max_batch_size={ctx.config['max_batch_size']}")

    def predict(self, inputs):
        a = inputs["INPUT0"]
        b = inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}

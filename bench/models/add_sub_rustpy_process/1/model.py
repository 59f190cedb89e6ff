"""add_sub on rustpy's batched API: the same arithmetic as add_sub_python, but
one predict() call per batch, on [batch, 4] arrays.

    OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1   (FP32 [4])
"""


class Model:
    def predict(self, inputs):
        in0 = inputs["INPUT0"]
        in1 = inputs["INPUT1"]
        return {"OUTPUT0": in0 + in1, "OUTPUT1": in0 - in1}

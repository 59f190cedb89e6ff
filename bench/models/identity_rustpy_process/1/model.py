"""Large-tensor identity on rustpy's batched API: OUTPUT0 = INPUT0 (UINT8)."""


class Model:
    def predict(self, inputs):
        return {"OUTPUT0": inputs["INPUT0"]}

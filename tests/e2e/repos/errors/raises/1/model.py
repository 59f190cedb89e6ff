class Model:
    def predict(self, inputs):
        rows = inputs["IN"].shape[0]
        raise ValueError(f"boom from the raises model ({rows} rows)")

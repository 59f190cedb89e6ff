class Model:
    def predict(self, inputs):
        return {"Y": inputs["X"] * 2}

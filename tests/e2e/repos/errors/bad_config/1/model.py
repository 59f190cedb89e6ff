class Model:
    def predict(self, inputs):
        return {"OUT": inputs["IN"]}

import helper


class Model:
    def predict(self, inputs):
        return {"Y": helper.twice(inputs["X"])}

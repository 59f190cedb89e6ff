import time


class Model:
    def predict(self, inputs):
        time.sleep(0.3)
        return {"Y": inputs["X"] + 1}

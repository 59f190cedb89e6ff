import numpy as np


class Model:
    def predict(self, inputs):
        import utils  # a sibling import at call time, not at load time

        who = "%s|-|%s" % (utils.WHO, utils.__file__)
        return {"WHO": np.array([who.encode()], dtype=object)}

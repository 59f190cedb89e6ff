import numpy as np

import utils
from shared import part


class Model:
    def predict(self, inputs):
        who = "%s|%s|%s" % (utils.WHO, part.WHO, utils.__file__)
        return {"WHO": np.array([who.encode()], dtype=object)}

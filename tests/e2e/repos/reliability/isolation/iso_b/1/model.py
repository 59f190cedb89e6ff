import numpy as np

import shared
import utils


class Model:
    def predict(self, inputs):
        assert utils.SCALE == 3
        who = "%s|%s|%s" % (utils.WHO, shared.WHO, utils.__file__)
        return {"WHO": np.array([who.encode()], dtype=object)}

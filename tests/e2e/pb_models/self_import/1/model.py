"""Looks itself up by module name and runs its own unit tests."""
import importlib
import json
import unittest

import numpy as np
import triton_python_backend_utils as pb_utils

import utils


class SelfTest(unittest.TestCase):
    def test_sibling(self):
        self.assertEqual(utils.WHO, "self_import utils")

    def test_arithmetic(self):
        self.assertEqual(np.float32(2) * 3, 6)


class TritonPythonModel:
    def execute(self, requests):
        me = importlib.import_module("model")
        sibling = importlib.import_module("utils")
        program = unittest.main("model", exit=False)
        info = {
            "import_module_model": [hasattr(me, "TritonPythonModel"), hasattr(me, "SelfTest")],
            "import_module_utils": sibling.WHO,
            "tests_run": program.result.testsRun,
            "tests_ok": program.result.wasSuccessful(),
        }
        out = pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_))
        return [pb_utils.InferenceResponse([out]) for _ in requests]

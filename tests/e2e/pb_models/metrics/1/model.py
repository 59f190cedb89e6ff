"""Custom metrics for the official Python backend."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def catch(fn):
    try:
        return {"ok": fn()}
    except Exception as e:  # noqa: BLE001
        return {"err": type(e).__name__}


class TritonPythonModel:
    def initialize(self, args):
        suffix = args["model_name"][len("metrics"):]
        self.labels = {"model": args["model_name"], "kind": "test"}
        self.counter_family = pb_utils.MetricFamily(
            name="pbtest_requests_total" + suffix, description="requests seen",
            kind=pb_utils.MetricFamily.COUNTER)
        self.gauge_family = pb_utils.MetricFamily(
            name="pbtest_last_value" + suffix, description="last input value",
            kind=pb_utils.MetricFamily.GAUGE)
        self.histogram_family = pb_utils.MetricFamily(
            name="pbtest_values" + suffix, description="input values",
            kind=pb_utils.MetricFamily.HISTOGRAM)
        self.counter = self.counter_family.Metric(labels=self.labels)
        self.gauge = self.gauge_family.Metric(labels=self.labels)
        self.histogram = self.histogram_family.Metric(labels=self.labels, buckets=[1.0, 10.0, 100.0])
        self.probes = {
            "histogram_without_buckets": catch(lambda: self.histogram_family.Metric(labels=self.labels) and "made"),
            "counter_set": catch(lambda: self.counter.set(5.0)),
            "counter_observe": catch(lambda: self.counter.observe(5.0)),
            "gauge_observe": catch(lambda: self.gauge.observe(5.0)),
            "histogram_increment": catch(lambda: self.histogram.increment(1.0)),
            "histogram_set": catch(lambda: self.histogram.set(1.0)),
        }

    def execute(self, requests):
        responses = []
        for request in requests:
            v = float(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            self.counter.increment(1)
            self.gauge.set(v)
            self.gauge.increment(0.5)
            self.histogram.observe(v)
            info = {
                "counter": self.counter.value(),
                "gauge": self.gauge.value(),
                "histogram_value": catch(lambda: self.histogram.value()),
                "negative_increment": catch(lambda: self.counter.increment(-1)),
                "counter_after": self.counter.value(),
                "probes": self.probes,
            }
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_))]))
        return responses

"""Custom metrics for the official Python backend."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def catch(fn):
    try:
        return {"ok": fn()}
    except Exception as e:  # noqa: BLE001
        return {"err": "%s: %s" % (type(e).__name__, e)}


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
            "counter_with_buckets": catch(lambda: self.counter_family.Metric(labels=self.labels, buckets=[1.0]) and "made"),
            "labels_not_dict": catch(lambda: self.counter_family.Metric(labels=[("a", "b")]) and "made"),
            "buckets_not_list": catch(lambda: self.histogram_family.Metric(labels=self.labels, buckets=(1.0,)) and "made"),
            "no_labels": catch(lambda: self.counter_family.Metric() and "made"),
        }
        self.suffix = suffix
        # Not probed: operations the server refuses (set/observe on a counter,
        # increment/set on a histogram, a negative increment). In 2.51 the
        # official backend aborts the whole server on those
        # (boost::interprocess::lock_exception in the parent process).

    def orphan_metric_probes(self, suffix):
        """A metric whose MetricFamily object was deleted first: every
        operation fails (upstream's custom_metrics QA, test_metric_lifetime_error)."""
        family = pb_utils.MetricFamily(name="pbtest_orphan" + suffix, description="family deleted first",
                                       kind=pb_utils.MetricFamily.GAUGE)
        metric = family.Metric(labels=self.labels)
        before = catch(lambda: metric.increment(1) or metric.value())
        del family
        return {"before": before, "set": catch(lambda: metric.set(10)),
                "increment": catch(lambda: metric.increment(10)), "value": catch(lambda: metric.value())}

    def execute(self, requests):
        responses = []
        for request in requests:
            v = float(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            self.counter.increment(1)
            self.gauge.set(v)
            self.gauge.increment(0.5)
            self.histogram.observe(v)
            if "after_family_deleted" not in self.probes:
                # In execute, as upstream's QA does (custom_metrics).
                self.probes["after_family_deleted"] = self.orphan_metric_probes(self.suffix)
            info = {
                "counter": self.counter.value(),
                "gauge": self.gauge.value(),
                "counter_after": self.counter.value(),
                "probes": self.probes,
            }
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_))]))
        return responses

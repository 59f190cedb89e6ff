"""A decoupled model for the official Python backend (MODE selects a behaviour)."""
import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def out(i):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], dtype=np.int32))])


def info(d):
    return pb_utils.InferenceResponse([
        pb_utils.Tensor("INFO", np.array([json.dumps(d, sort_keys=True)], dtype=np.object_))])


def catch(fn):
    try:
        fn()
        return "ok"
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(self.config)
        self.threads = []
        self.reports = []

    def execute(self, requests):
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            sender = request.get_response_sender()
            if mode == "inline":
                for i in range(n):
                    sender.send(out(i))
                sender.send(flags=FINAL)
            elif mode == "inline_last_final":
                for i in range(n):
                    sender.send(out(i), flags=FINAL if i == n - 1 else 0)
            elif mode == "thread":
                def work(sender=sender, n=n):
                    time.sleep(0.05)  # after execute returned
                    for i in range(n):
                        sender.send(out(i))
                        time.sleep(0.005)
                    sender.send(flags=FINAL)
                t = threading.Thread(target=work)
                t.start()
                self.threads.append(t)
            elif mode == "zero":
                sender.send(flags=FINAL)
            elif mode == "error":
                sender.send(out(0))
                sender.send(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("decoupled error", pb_utils.TritonError.NOT_FOUND)))
                sender.send(out(1))
                sender.send(flags=FINAL)
            elif mode == "error_final":
                sender.send(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("final error", pb_utils.TritonError.INVALID_ARG)), flags=FINAL)
            elif mode == "return_list":
                return [out(0) for _ in requests]
            elif mode == "raise":
                raise ValueError("decoupled boom")
            elif mode == "raise_after_send":
                sender.send(out(0))
                raise ValueError("raised after a send")
            elif mode == "raise_after_final":
                sender.send(out(0), flags=FINAL)
                raise ValueError("raised after the final flag")
            elif mode == "checks":
                report = {
                    "decoupled": self.decoupled,
                    "bad_flags": catch(lambda: sender.send(out(0), flags=3)),
                    "none_nonfinal": catch(lambda: sender.send(None, 0)),
                    "none_default": catch(lambda: sender.send()),
                    "is_cancelled": sender.is_cancelled(),
                }
                sender.send(info(report))
                sender.send(out(1), flags=FINAL)
                report2 = {"send_after_final": catch(lambda: sender.send(out(2))),
                           "final_after_final": catch(lambda: sender.send(flags=FINAL))}
                self.reports.append(report2)
            elif mode == "race_final":
                # n threads send a final response at once: one goes out, the
                # others are told the sender is closed (never two FINALs).
                go = threading.Barrier(n)
                results = []

                def racer(sender=sender):
                    go.wait(timeout=30)
                    results.append(catch(lambda: sender.send(out(7), flags=FINAL)))
                racers = [threading.Thread(target=racer) for _ in range(n)]
                for t in racers:
                    t.start()
                for t in racers:
                    t.join(timeout=60)
                self.reports.append({"race_final": sorted(results)})
            elif mode == "report":
                # What the previous "checks" request saw after its final flag.
                sender.send(info({"reports": self.reports}), flags=FINAL)
                self.reports = []
            else:
                raise ValueError("unknown mode " + mode)
        return None

    def finalize(self):
        for t in self.threads:
            t.join()

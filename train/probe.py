"""A few measured optimizer steps of a real training run (`opclaim doctor`'s shape check).

    accelerate launch --config_file C -m train.probe --probe-out DIR --config RECIPE [--key value ...]

Runs train.run.main unchanged (same model loading, quantisation, LoRA, trainer, DeepSpeed) with one
extra callback that measures, per rank, and writes DIR/probe-rank<R>.json:

  peak_bytes   GPU: torch.cuda.max_memory_allocated over the steps (DeepSpeed's init included).
               CPU: live tensor bytes when the trainer is built (found by walking the garbage
               collector's objects: parameters, ZeRO-3 partitions, buffers) + the peak of the live
               allocations torch.profiler records from then to the end of training - the same
               "resident + step peak" measure train/memory.py's CPU check uses.
  step_s       wall time of each optimizer step (the first one includes warm-up).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import opclaim  # noqa: F401  (offline before any HF import)
from opclaim.errors import InputError
from opclaim.exits import call, take_debug_flag

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - transformers is a core dependency
    TrainerCallback = object


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage reachable from Python objects right now."""
    import torch

    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.device.type == "meta":
                continue
            st = obj.untyped_storage()
        except Exception:  # noqa: BLE001 - odd tensor subclasses without storage
            continue
        key = st.data_ptr()
        if key and key not in seen:
            seen.add(key)
            total += st.nbytes()
    return total


class Measure(TrainerCallback):
    def __init__(self, out: Path):
        self.out, self.step_s, self.resident, self.prof, self.t = out, [], 0, None, None
        self.gpu = False

    def on_init_end(self, args, state, control, **kw):
        import torch

        self.gpu = torch.cuda.is_available() and not getattr(args, "use_cpu", False)
        if self.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            from torch.profiler import ProfilerActivity, profile

            gc.collect()
            self.resident = live_tensor_bytes()
            self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.prof.__enter__()

    def on_step_begin(self, args, state, control, **kw):
        if self.t is None:
            self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.gpu:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        self.step_s.append(now - self.t)
        self.t = now

    def on_train_end(self, args, state, control, **kw):
        import torch

        rank = int(os.environ.get("RANK", "0"))
        rec = {"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")), "step_s": self.step_s,
               "device": "gpu" if self.gpu else "cpu"}
        if self.gpu:
            rec["peak_bytes"] = int(torch.cuda.max_memory_allocated())
            rec["reserved_bytes"] = int(torch.cuda.max_memory_reserved())
            rec["gpu_name"] = torch.cuda.get_device_name()
        else:
            self.prof.__exit__(None, None, None)
            events = sorted((e.start_ns(), e.nbytes()) for e in self.prof.profiler.kineto_results.events()
                            if e.name() == "[memory]")
            live = peak = 0
            for _, nbytes in events:
                live += nbytes
                peak = max(peak, live)
            rec.update(peak_bytes=self.resident + peak, resident_bytes=self.resident, step_peak_bytes=peak)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / f".probe-rank{rank}.json.part"
        tmp.write_text(json.dumps(rec), encoding="utf-8")
        tmp.replace(self.out / f"probe-rank{rank}.json")


def run(argv) -> int:
    import logging

    from train.run import WithholdText, main, parse

    argv = list(argv)
    if "--probe-out" not in argv or argv.index("--probe-out") + 1 >= len(argv):
        raise InputError("--probe-out DIR is required", field="--probe-out", from_command_line=True)
    i = argv.index("--probe-out")
    out = Path(argv[i + 1])
    del argv[i:i + 2]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("trl.trainer.sft_trainer").addFilter(WithholdText())
    margs, dargs, targs = parse(argv)
    return main(margs, dargs, targs, extra_callbacks=[Measure(out)])


def entry(argv=None) -> int:
    argv, debug = take_debug_flag(sys.argv[1:] if argv is None else argv)
    return call("train.probe", run, argv, debug=debug)


if __name__ == "__main__":
    sys.exit(entry())

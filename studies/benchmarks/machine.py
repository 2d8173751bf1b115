"""Where a benchmark ran, how its peak memory is read, and how one measurement is isolated.

Peak memory: on CUDA ``max_memory_allocated`` over the call; on a CPU the high-water mark of the
resident set (``VmHWM``, reset by writing "5" to ``/proc/self/clear_refs`` after ``malloc_trim``
hands glibc's freed memory back), minus the resident size at the start; ``None`` where Linux lacks
either, never a guess. Isolation: on a CPU each measurement runs in a forked child, so that one
group's heap never inflates the next and a group killed for memory is skipped, not fatal; CUDA
cannot fork once initialised, so there a CUDA out-of-memory error skips the group instead.
"""
import ctypes
import logging
import multiprocessing
import os
import platform
import time
import traceback
import warnings

import torch

from fairseq_headless.files import proc_fields

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def quiet():
    """Only warnings from fairseq, hydra and matplotlib; the benchmarks' own progress at INFO."""
    logging.basicConfig(format="%(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("studies").setLevel(logging.INFO)
    # hydra_init stores fairseq's schema under each config's name, which hydra warns about at every compose
    warnings.filterwarnings("ignore", message=r"\s*.*validated against ConfigStore schema")


def proc_kib(path, key):
    """A ``kB`` field of a /proc file (files.proc_fields) as an int, None where missing."""
    value = proc_fields(path, [key]).get(key)
    return None if value is None else int(value.split()[0])


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def cpu_peak_memory_available() -> bool:
    return proc_kib("/proc/self/status", "VmHWM") is not None and _reset_peak_rss()


class PeakMemory:
    """``with PeakMemory(device) as meter: ...`` then ``meter.extra_mb``: peak extra memory of the block."""

    def __init__(self, device):
        self.device, self.extra_mb = torch.device(device), None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            if _LIBC is not None:
                _LIBC.malloc_trim(0)
            self._base = proc_kib("/proc/self/status", "VmRSS") if _reset_peak_rss() else None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            self.extra_mb = (proc_kib("/proc/self/status", "VmHWM") - self._base) / 1024
        return False


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def tensor_mb(tensors) -> float:
    """Memory held by these tensors (parameters, optimizer state), counting shared storage once."""
    storages = {(t.untyped_storage().data_ptr(), t.device): t.untyped_storage().nbytes()
                for t in tensors if torch.is_tensor(t) and not t.is_sparse}
    return sum(storages.values()) / 2**20


def available_memory_mb(device) -> float:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    kib = proc_kib("/proc/meminfo", "MemAvailable")
    return float("inf") if kib is None else kib / 1024


def describe(device) -> dict:
    """The machine a result came from, and how busy it was when the run started."""
    import fairseq

    device = torch.device(device)
    total = proc_kib("/proc/meminfo", "MemTotal")
    info = {
        "cpu_model": proc_fields("/proc/cpuinfo", ["model name"]).get("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "memory_gb": round(total / 2**20, 1) if total else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__, "fairseq": fairseq.__version__,
        "platform": platform.platform(), "device": str(device), "gpu": None,
        "cpu_memory_method": "VmHWM after clear_refs and malloc_trim" if cpu_peak_memory_available() else None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return info


def _child(target, kwargs, connection):
    try:
        connection.send(("result", target(**kwargs)))
    except MemoryError:
        connection.send(("skipped", "out of memory (MemoryError)"))
    except BaseException:  # the parent reports it; the child must not die silently
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def run_isolated(target, kwargs: dict, device):
    """``target(**kwargs)`` in a forked child (CPU) or here (CUDA): ("result", value), ("skipped", why) or
    ("error", traceback). The child logs to the parent's stderr, which it inherits."""
    if torch.device(device).type == "cuda":
        try:
            return "result", target(**kwargs)
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            return "skipped", f"CUDA out of memory ({str(error).splitlines()[0]})"
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(target, kwargs, child_end), daemon=True)
    process.start()
    child_end.close()
    try:
        outcome = parent_end.recv()
    except EOFError:  # the child died without a word: the kernel's OOM killer, most likely
        outcome = None
    process.join()
    if outcome is None:
        code = process.exitcode
        outcome = ("skipped", "killed by the kernel (out of memory?)" if code in (-9, 137)
                   else f"child exited with code {code}")
    return outcome

"""Where a benchmark ran, how its peak memory is read, and how one measurement is isolated.

Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` over the measured call, minus what was
  allocated when it started;
* CPU: the peak resident set size (``VmHWM`` of ``/proc/self/status``) over the
  call, minus the resident size when it started. Linux resets the high-water mark
  when "5" is written to ``/proc/self/clear_refs``; memory that glibc keeps after
  a ``free`` (and that a later allocation would reuse without growing the RSS) is
  handed back first with ``malloc_trim(0)``, so that the increase is what the call
  allocated. Where either is missing, memory is not reported (``None``), never
  guessed.

Isolation: on CPU every measurement group runs in a forked child process, so that
one group's heap never inflates the next one's numbers and a group killed for
memory is reported as skipped instead of ending the run. On CUDA (which cannot be
forked once initialised) groups run in the process and a CUDA out-of-memory error
skips the group.
"""

import ctypes
import multiprocessing
import os
import platform
import time
import traceback
from typing import Callable, Optional

import torch

_CLEAR_REFS = "/proc/self/clear_refs"


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def _status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def cpu_peak_memory_available() -> bool:
    return _status_kib("VmHWM") is not None and _reset_peak_rss()


class PeakMemory:
    """``with PeakMemory(device) as meter: ...`` then ``meter.extra_mb``: peak extra memory of the block."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.extra_mb: Optional[float] = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            if _LIBC is not None:
                _LIBC.malloc_trim(0)  # what glibc kept from earlier frees goes back to the OS
            self._ok = _reset_peak_rss()
            self._base = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._ok and self._base is not None:
            self.extra_mb = (_status_kib("VmHWM") - self._base) / 1024
        return False


def tensor_mb(tensors) -> float:
    """Memory held by these tensors (parameters, optimizer state), counting shared storage once."""
    seen, total = set(), 0
    for t in tensors:
        if not torch.is_tensor(t) or t.is_sparse:
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total / 2**20


def available_memory_mb(device: torch.device) -> float:
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def describe(device: torch.device) -> dict:
    """The machine a result came from, and how busy it was when the run started."""
    import fairseq

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(_meminfo_total_gb(), 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairseq": getattr(fairseq, "__version__", "unknown"),
        "platform": platform.platform(),
        "device": str(device),
        "gpu": None,
        "cpu_memory_method": "VmHWM after clear_refs and malloc_trim" if cpu_peak_memory_available() else None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                       "cuda": torch.version.cuda}
    return info


def _meminfo_total_gb() -> float:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _child(target, kwargs, connection):
    try:
        result = target(report=lambda message: connection.send(("progress", message)), **kwargs)
        connection.send(("result", result))
    except MemoryError:
        connection.send(("skipped", "out of memory (MemoryError)"))
    except BaseException:  # the parent reports it; the child must not die silently
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def run_isolated(target: Callable, kwargs: dict, device: torch.device, on_progress: Callable[[str], None]):
    """``target(report=..., **kwargs)`` in a forked child (CPU) or in this process (CUDA).

    Returns ``("result", value)``, ``("skipped", why)`` or ``("error", traceback)``.
    """
    if torch.device(device).type == "cuda":
        try:
            return "result", target(report=on_progress, **kwargs)
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            return "skipped", f"CUDA out of memory ({str(error).splitlines()[0]})"
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(target, kwargs, child_end), daemon=True)
    process.start()
    child_end.close()
    outcome = None
    try:
        while outcome is None:
            if parent_end.poll(0.5):
                try:
                    kind, payload = parent_end.recv()
                except EOFError:
                    break
                if kind == "progress":
                    on_progress(payload)
                else:
                    outcome = (kind, payload)
            elif not process.is_alive() and not parent_end.poll(0):
                break
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
            process.join()
    if outcome is None:
        code = process.exitcode
        why = "killed by the kernel (out of memory?)" if code in (-9, 137) else f"child exited with code {code}"
        outcome = ("skipped", why)
    return outcome

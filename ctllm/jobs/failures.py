"""Turn the end of a failed job's log into one message a user can act on."""

from __future__ import annotations

import re

from ctllm.jobs.processes import describe_exit

MEMORY_ADVICE = (
    "try LoRA instead of full fine-tuning, a smaller batch size (raise gradient accumulation to keep the "
    "effective batch), or a shorter max_length"
)

_GPU_OOM = ("cuda out of memory", "outofmemoryerror", "cublas_status_alloc_failed", "hip out of memory")
_CPU_OOM = ("defaultcpuallocator: can't allocate memory", "memoryerror")
# The last "SomeError: message" line of a Python traceback.
_EXCEPTION_LINE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")


def failure_hint(text: str) -> str | None:
    """A specific diagnosis when the text shows a known cause (GPU or CPU out of memory), else None."""
    lowered = text.lower()
    if any(marker in lowered for marker in _GPU_OOM):
        return f"CUDA out of memory: the model, batch and sequence length do not fit on the GPU; {MEMORY_ADVICE}."
    if any(marker in lowered for marker in _CPU_OOM):
        return f"Out of CPU memory: {MEMORY_ADVICE}."
    return None


def last_exception(text: str) -> str | None:
    """The final 'Error: message' line of the last traceback in ``text``."""
    lines = text.splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")), default=-1)
    if start < 0:
        return None
    found = None
    for line in lines[start + 1 :]:
        match = _EXCEPTION_LINE.match(line)
        if match and not line.startswith((" ", "\t")):
            found = line.strip()
    return found


def classify_failure(log_tail: str, exit_code: int | None = None) -> str:
    """One message for a job that failed: out of memory (with what to change), the process killed by a signal,
    the last Python exception, or the exit code."""
    hint = failure_hint(log_tail)
    if hint:
        return hint
    if exit_code == -9:
        return (
            "The process was killed (SIGKILL) without reporting an error: usually the system's out-of-memory "
            f"killer or a manual kill -9. If memory is short, {MEMORY_ADVICE}."
        )
    exception = last_exception(log_tail)
    if exception:
        return f"The job failed with {exception} ({describe_exit(exit_code)})."
    return f"The job ended without reporting a final state ({describe_exit(exit_code)}); see the end of its log."

"""Background jobs (training, synthesis) as detached processes: start, watch, cancel, resume, re-attach."""

from ctllm.jobs.commands import command_line, ctllm_command, train_command, with_resume
from ctllm.jobs.devices import conflicts, parse_devices
from ctllm.jobs.failures import classify_failure, failure_hint
from ctllm.jobs.manager import JobManager, JobView
from ctllm.jobs.table import FINAL_STATES, KINDS, STATES, Job

__all__ = [
    "FINAL_STATES",
    "KINDS",
    "STATES",
    "Job",
    "JobManager",
    "JobView",
    "classify_failure",
    "command_line",
    "conflicts",
    "ctllm_command",
    "failure_hint",
    "parse_devices",
    "train_command",
    "with_resume",
]

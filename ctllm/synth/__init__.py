"""Synthetic preference pairs from instruction data: chosen from the data (or a strong model), rejected from a
weak model, filtered, stored, resumable."""

from ctllm.synth.filters import FILTERS, Answer, edit_distance, near_identical, normalised_edit_distance, pair_problem
from ctllm.synth.job import Preflight, jobs_dir, preflight, start_synth_job
from ctllm.synth.prompts import PromptFile, PromptItem, read_prompt_file
from ctllm.synth.run import SynthOptions, SynthSummary, synth_command, synthesize

__all__ = [
    "FILTERS",
    "Answer",
    "Preflight",
    "PromptFile",
    "PromptItem",
    "SynthOptions",
    "SynthSummary",
    "edit_distance",
    "jobs_dir",
    "near_identical",
    "normalised_edit_distance",
    "pair_problem",
    "preflight",
    "read_prompt_file",
    "start_synth_job",
    "synth_command",
    "synthesize",
]

"""Before/after evaluation of a DPO model against its SFT reference: preference accuracy and implicit rewards on
held-out pairs, refusal and answer rates on prompt lists, tables, CSV and plotly charts."""

from ctllm.evaluate.metrics import PairLogps, pair_metrics, prefers_chosen
from ctllm.evaluate.prompts_eval import PromptList, default_prompt_lists, load_prompt_list
from ctllm.evaluate.report import (
    before_after,
    export_csv,
    figures,
    format_table,
    headline_text,
    result_rows,
    write_charts,
    write_csv,
)
from ctllm.evaluate.run import (
    EVAL_JSON,
    EvalOptions,
    as_loaded,
    evaluate,
    evaluate_models,
    evaluate_run,
    headline,
    load_result,
    run_summary,
    summary_headline,
)

__all__ = [
    "EVAL_JSON",
    "EvalOptions",
    "PairLogps",
    "PromptList",
    "as_loaded",
    "before_after",
    "default_prompt_lists",
    "evaluate",
    "evaluate_models",
    "evaluate_run",
    "export_csv",
    "figures",
    "format_table",
    "headline",
    "headline_text",
    "load_prompt_list",
    "load_result",
    "pair_metrics",
    "prefers_chosen",
    "result_rows",
    "run_summary",
    "summary_headline",
    "write_charts",
    "write_csv",
]

"""
The DSLA-vs-FCOS study (``tools/study.py``, ``make study``): variants x seeds x datasets, each
trained with the same budget in a fresh process and evaluated with COCO AP and
:class:`dsla.evaluation.ScoreIoUEvaluator`; finished runs are kept and skipped, so a study resumes
across invocations; reported as mean ± std over seeds in ``study.md``, ``study.json`` and plots.
"""

from .cli import argument_parser, datasets_from_args, main, run_study, variants_from_args
from .datasets import TREES, study_dataset
from .report import (
    aggregate,
    collect_results,
    format_mean_std,
    mean_std,
    plot_study,
    render_markdown,
    write_report,
)
from .runs import (
    BEFORE_NMS_OVERRIDES,
    BEFORE_NMS_PREFIX,
    RunFailed,
    StudyDataset,
    StudyRun,
    add_before_nms,
    evaluate_before_nms,
    execute_runs,
    is_finished,
    lacks_before_nms,
    load_result,
    plan_runs,
    run_in_subprocess,
    train_run,
)
from .variants import (
    BUILTIN_VARIANTS,
    Variant,
    format_override_value,
    load_variant_spec,
    parse_override_value,
    parse_variant,
    resolve_config_file,
)

__all__ = [
    "BEFORE_NMS_OVERRIDES",
    "BEFORE_NMS_PREFIX",
    "BUILTIN_VARIANTS",
    "RunFailed",
    "StudyDataset",
    "StudyRun",
    "TREES",
    "Variant",
    "add_before_nms",
    "aggregate",
    "argument_parser",
    "collect_results",
    "datasets_from_args",
    "evaluate_before_nms",
    "execute_runs",
    "format_mean_std",
    "format_override_value",
    "is_finished",
    "lacks_before_nms",
    "load_result",
    "load_variant_spec",
    "main",
    "mean_std",
    "parse_override_value",
    "parse_variant",
    "plan_runs",
    "plot_study",
    "render_markdown",
    "resolve_config_file",
    "run_in_subprocess",
    "run_study",
    "study_dataset",
    "train_run",
    "variants_from_args",
    "write_report",
]

"""The pure torch/numpy pruning core: targets, criteria, masks, session, evaluation, stats."""

from .criteria import CRITERIA, Criterion, get_criterion
from .criteria_modern import LAMP, Wanda
from .errors import (
    CheckpointError,
    CriterionError,
    EvaluationError,
    InvalidSparsityError,
    NonFiniteWeightsError,
    NoPrunableTensorsError,
    PrunevizError,
    RecipeMismatchError,
    UnknownLayerError,
)
from .export import export_pruned_model, pruned_copy
from .files import load_checkpoint
from .finetune import EpochRecord, FinetuneResult, finetune, revert_finetune
from .plan import SCOPES, Plan
from .recipe import apply_recipe, apply_recipe_to_session, load_recipe, make_recipe, save_recipe
from .schedules import SCHEDULES, ScheduleRecord, ScheduleResult, run_schedule, schedule_sparsities
from .sensitivity import DEFAULT_LEVELS, SensitivityResult, SensitivityRow, SweepError, sensitivity_sweep
from .session import PruningSession, SessionEvent
from .stats import LayerStats, Summary, count_flops, measure_latency
from .targets import Target, find_targets

__all__ = [
    "LAMP",
    "Wanda",
    "DEFAULT_LEVELS",
    "EpochRecord",
    "FinetuneResult",
    "SCHEDULES",
    "ScheduleRecord",
    "ScheduleResult",
    "SensitivityResult",
    "SensitivityRow",
    "SweepError",
    "finetune",
    "revert_finetune",
    "run_schedule",
    "schedule_sparsities",
    "sensitivity_sweep",
    "CRITERIA",
    "SCOPES",
    "CheckpointError",
    "Criterion",
    "CriterionError",
    "EvaluationError",
    "InvalidSparsityError",
    "LayerStats",
    "NoPrunableTensorsError",
    "NonFiniteWeightsError",
    "Plan",
    "PruningSession",
    "PrunevizError",
    "RecipeMismatchError",
    "SessionEvent",
    "Summary",
    "Target",
    "UnknownLayerError",
    "apply_recipe",
    "apply_recipe_to_session",
    "count_flops",
    "export_pruned_model",
    "load_checkpoint",
    "load_recipe",
    "make_recipe",
    "pruned_copy",
    "save_recipe",
    "find_targets",
    "get_criterion",
    "measure_latency",
]


#: names imported on first use: their modules pull in torch-pruning, torch.utils.benchmark or onnx (seconds)
_LAZY = {
    "LatencyReport": ("latency", "LatencyReport"), "measure_onnx_latency": ("latency", "measure_onnx_latency"),
    "measure_latency_report": ("latency", "measure_latency"),
    "PlanIteration": ("plan_finder", "PlanIteration"), "PlanResult": ("plan_finder", "PlanResult"),
    "PlanSearchError": ("plan_finder", "PlanSearchError"), "find_plan": ("plan_finder", "find_plan"),
    "criterion_race": ("race", "criterion_race"), "RaceError": ("race_result", "RaceError"),
    "RacePoint": ("race_result", "RacePoint"), "RaceResult": ("race_result", "RaceResult"),
    "remove_hidden_units": ("recurrent_removal", "remove_hidden_units"),
    "shrink_linear_inputs": ("recurrent_removal", "shrink_linear_inputs"),
    "KeptLayer": ("removal", "KeptLayer"), "SlimResult": ("removal", "SlimResult"),
    "coupled_groups": ("removal", "coupled_groups"), "slim": ("removal", "slim"),
    "slim_model": ("removal", "slim_model"), "ExampleInputError": ("removal_graph", "ExampleInputError"),
    "RemovalError": ("removal_graph", "RemovalError"), "TraceError": ("removal_graph", "TraceError"),
    "WorkLimitError": ("removal_graph", "WorkLimitError"), "WorkLimits": ("removal_graph", "WorkLimits"),
    "OnnxExportError": ("slim_export", "OnnxExportError"), "export_onnx": ("slim_export", "export_onnx"),
    "load_slim": ("slim_export", "load_slim"), "save_slim": ("slim_export", "save_slim"),
    "slim_bytes": ("slim_export", "slim_bytes"), "onnx_bytes": ("slim_export", "onnx_bytes"),
    "recalibrate_batchnorm": ("recalibrate", "recalibrate_batchnorm"),
    "revert_recalibration": ("recalibrate", "revert_recalibration"),
    "measure_actual": ("removal_measure", "measure_actual"), "find_architecture": ("removal_arch", "find_architecture"),
}


#: every public name: the eager ``__all__`` (what ``import *`` copies) and the lazy ones
PUBLIC = (*__all__, *_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

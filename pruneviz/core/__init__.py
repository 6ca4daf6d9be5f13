"""The pure torch/numpy pruning core: targets, criteria, masks, session, evaluation, stats."""

from .criteria import CRITERIA, Criterion, get_criterion
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

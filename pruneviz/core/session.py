"""PruningSession: original weights kept once, a plan, masks applied in place, undo/redo/reset, events."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .batches import Batch, as_batches
from .criteria import Criterion, ScoreContext, find_batchnorms
from .errors import NonFiniteWeightsError, PrunevizError, UnknownLayerError, suggest
from .masking import MaskingMixin
from .masks import (
    all_finite,
    check_sparsity,
    expand_channel_mask,
    mask_from_rank,
)
from .plan import SCOPES, Plan
from .ranking import Ordered
from .rebase import RebaseMixin
from .stats import LayerStats, Summary, summarize
from .targets import Target, excluded_parameters, find_targets, get_tensor

log = logging.getLogger(__name__)

MAX_HISTORY = 10_000
#: calibration batches the session keeps (the gradient criteria average over them)
CALIB_BATCHES = 8
ENGINES = ("auto", "rank", "order")
#: from this many prunable weights on, ``engine="auto"`` keeps positions in pruning order (see ranking.py)
ORDER_ENGINE_MIN = 40_000_000
#: from this many prunable weights on, ranking reports its progress (it takes over a second)
PROGRESS_MIN = 10_000_000


@dataclass(frozen=True)
class SessionEvent:
    """What a change did: ``reason`` (set, criterion, scope, undo, redo, reset, plan), the layers
    whose masks changed, the plan now in force and the session's generation counter."""

    reason: str
    layers: tuple[str, ...]
    plan: Plan
    generation: int


Listener = Callable[[SessionEvent], None]


class PruningSession(MaskingMixin, RebaseMixin):
    """Prune ``model`` reversibly: every change is recomputed from the original weights.

    >>> s = PruningSession(model, criterion="magnitude", scope="global")
    >>> s.set_global_sparsity(0.8); s.undo(); s.reset()
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        criterion: str | Criterion = "magnitude",
        scope: str = "layer",
        include: Sequence[str | type] | None = None,
        exclude: Sequence[str | type] | None = None,
        calib_data: Any = None,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        seed: int = 0,
        task: str | Any | None = None,
        protect: Sequence[str | type] | None = None,
        embeddings: bool = False,
        example_input: Any = None,
        engine: str = "auto",
        progress: Callable[[str, float], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise PrunevizError(
                f"the model is a {type(model).__name__}, not a torch.nn.Module: pass the model object itself "
                "(e.g. torchvision.models.resnet18(), or torch.load(...) into a model built in code)."
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise PrunevizError(f"seed must be a whole number, got {seed!r}.")
        self.model = model
        self.targets: list[Target] = find_targets(model, include=include, exclude=exclude, embeddings=embeddings)
        self._by_name = {t.name: t for t in self.targets}
        #: every parameter that is not pruned, with the reason (biases, norms, tied copies, opt-in embeddings)
        self.excluded: dict[str, str] = excluded_parameters(model, self.targets, embeddings=embeddings)
        groups: dict[str, list[str]] = {}
        for t in self.targets:
            if t.unit_group is not None:
                groups.setdefault(t.unit_group, []).append(t.name)
        self._unit_groups = {g: m for g, m in groups.items() if len(m) > 1}
        # structured scope couples the channels of layers tied by residual adds (found from example_input, on the
        # first structured ranking): they prune the same channels, so the smaller model can drop them
        self._example_input = example_input
        self._coupled: list[list[str]] | None = None
        self._params = {t.name: get_tensor(model, t.name) for t in self.targets}
        bad = [n for n, p in self._params.items() if not all_finite(p)]
        if bad:
            raise NonFiniteWeightsError(
                f"NaN or inf in the weights of {', '.join(bad)}: pruning by any criterion would be meaningless. "
                "Load a healthy checkpoint (or fix the training run) and start a new session."
            )
        self.lock = threading.RLock()
        self._bn_of = find_batchnorms(model, self.targets)
        # per target: the 1-D tensors that go with each output channel in structured scope (its bias, and the
        # scale and shift of the BatchNorm after it, so a removed channel outputs exactly 0 as if it were gone)
        self._channel_tensors: dict[str, list[str]] = {}
        for t in self.targets:
            names = [t.bias_name] if t.bias_name else []
            bn = self._bn_of.get(t.name)
            if bn is not None and getattr(model.get_submodule(bn), "affine", False):
                names += [f"{bn}.weight", f"{bn}.bias"]
            self._channel_tensors[t.name] = names
        if engine not in ENGINES:
            raise PrunevizError(f"engine={engine!r}: choose one of {', '.join(ENGINES)}.")
        prunable = sum(t.numel for t in self.targets)
        # "rank": one int32 rank per weight, every move rewrites changed tensors (fastest up to ~40 M weights);
        # "order": positions in pruning order, a move writes only the weights whose fate changed (big models)
        self._engine = engine if engine != "auto" else ("order" if prunable >= ORDER_ENGINE_MIN else "rank")
        if self._engine == "order" and scope != "structured":  # structured ranks channels: no weight sort
            from .radix import warm_async

            warm_async()  # the big-model engine's compiled sorts load while the weights are copied
        with torch.no_grad():
            self._originals = {n: p.detach().clone() for n, p in self._params.items()}
            self._extra_params = {x: get_tensor(model, x) for xs in self._channel_tensors.values() for x in xs}
            self._extra_originals = {x: p.detach().clone() for x, p in self._extra_params.items()}
        self._mask_cache: dict[str, torch.Tensor] = {}
        #: ``progress(stage, fraction)``: called while a criterion or scope is ranked on a big model (seconds)
        self.progress: Callable[[str, float], None] | None = progress
        self._big = prunable >= PROGRESS_MIN
        self._zeros = dict.fromkeys(self._by_name, 0)
        self._applied: dict[str, tuple] = {n: ("dense", 0) for n in self._by_name}
        # calibration data in any form (tensors, a Dataset, a DataLoader, a list of batches): the first few
        # batches, read once (a generator could not be read twice)
        calib = as_batches(calib_data, limit=CALIB_BATCHES) if calib_data is not None else None
        self._ctx = ScoreContext(
            model, self.targets, self._originals, calib, loss_fn, max_batches=CALIB_BATCHES, seed=seed,
            extra_originals=self._extra_originals, batchnorms=self._bn_of, task=task,
        )
        self._criteria: dict[str, Criterion] = {}
        self._rank_key: tuple | None = None
        self._base = 0  # bumped when the originals change (rebase after fine-tuning, hard reset)
        self._pins: dict[str, torch.Tensor] = {}  # weights pruned when the session was rebased: ranked last
        self._initial: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None] | None = None
        self._ranks: dict[str, torch.Tensor | None] = {}
        self._channel_ranks: dict[str, dict[str, torch.Tensor | None]] = {}
        self.output_layer = self.targets[-1].name
        self._protected = self._resolve_protect(protect)
        self.generation = 0
        self._listeners: list[Listener] = []
        plan = Plan(self._criterion(criterion).name, scope, dict.fromkeys(self._by_name, 0.0))
        self._rank_key, self._ranks = self._ranks_for(self._validate(plan))
        self._plan = plan
        self._history: list[Plan] = [plan]
        self._pos = 0

    # ----------------------------------------------------------------- reading
    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def target(self, name: str) -> Target:
        self._check_name(name)
        return self._by_name[name]

    def original(self, name: str) -> torch.Tensor:
        """The original (unpruned) weight of ``name``; do not modify it."""
        self._check_name(name)
        return self._originals[name]

    def mask(self, name: str) -> torch.Tensor:
        """The current keep-mask of ``name`` (bool, True = kept), computed on demand; do not modify it."""
        self._check_name(name)
        with self.lock:
            cached = self._mask_cache.get(name)
            if cached is None:
                t, state = self._by_name[name], self._applied[name]
                if state[0] == "dense":
                    cached = torch.ones(t.shape, dtype=torch.bool)
                elif state[0] == "structured":
                    cached = expand_channel_mask(mask_from_rank(self._ranks[name], state[2]), t).contiguous()
                elif isinstance(self._ranks[name], Ordered):
                    cached = self._ranks[name].mask(self._zeros[name])
                else:
                    cached = mask_from_rank(self._ranks[name], state[2])
                self._mask_cache[name] = cached
            return cached

    def layer_state(self, name: str) -> tuple:
        """A hashable identity of ``name``'s current masked weights: equal states mean equal weights."""
        return self._applied[name]

    def channel_mask(self, name: str) -> torch.Tensor | None:
        """Per-output-channel keep-mask of ``name`` in structured scope (None when not pruned by channels)."""
        self._check_name(name)
        state = self._applied[name]
        return mask_from_rank(self._ranks[name], state[2]) if state[0] == "structured" else None

    def original_bias(self, name: str) -> torch.Tensor | None:
        """The original bias of the layer that owns weight ``name`` (None if it has none)."""
        t = self.target(name)
        return self._extra_originals.get(t.bias_name) if t.bias_name else None

    def channel_tensors(self, name: str) -> list[str]:
        """Names of the 1-D tensors zeroed with ``name``'s output channels in structured scope: the layer's
        bias and the scale and shift of the BatchNorm that follows it."""
        self._check_name(name)
        return list(self._channel_tensors[name])

    def original_tensor(self, tensor_name: str) -> torch.Tensor:
        """The original value of a prunable weight or of one of its channel tensors; do not modify it."""
        if tensor_name in self._originals:
            return self._originals[tensor_name]
        if tensor_name in self._extra_originals:
            return self._extra_originals[tensor_name]
        raise UnknownLayerError(f"{tensor_name!r} is not a tensor this session changes." + suggest(
            tensor_name, [*self._originals, *self._extra_originals]))

    def batchnorm_of(self, name: str) -> str | None:
        """The BatchNorm module that normalises ``name``'s output, if any."""
        self._check_name(name)
        return self._bn_of.get(name)

    def calibration(self) -> tuple[list[Batch] | None, Callable | None]:
        """The calibration batches (at most as many as the gradient criteria use) and the loss function."""
        if self._ctx.calib_data is None:
            return None, self._ctx.loss_fn
        return list(self._ctx.calib_data)[: self._ctx.max_batches], self._ctx.loss_fn

    @property
    def task(self) -> Any:
        """The task given to the session (a Task, a name, or None: picked from the data when needed)."""
        return self._ctx.task

    def criterion(self, name: str | None = None) -> Criterion:
        """The criterion object called ``name`` (default: the plan's), including custom ones given to the session."""
        return self._criterion(name or self._plan.criterion)

    @property
    def has_calib_data(self) -> bool:
        """Whether the session has calibration batches (needed by the gradient criteria)."""
        return self._ctx.calib_data is not None

    @property
    def seed(self) -> int:
        return self._ctx.seed

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Every layer's keep-mask (see :meth:`mask`)."""
        return {n: self.mask(n) for n in self._by_name}

    def zeros(self, name: str) -> int:
        """How many weights of ``name`` are pruned now."""
        return self._zeros[name]

    def layer_sparsity(self, name: str) -> float:
        t = self.target(name)
        return self._zeros[name] / t.numel

    def layer_sparsities(self) -> dict[str, float]:
        """The sparsity each layer has now (in global scope: the one the global threshold implies)."""
        return {t.name: self._zeros[t.name] / t.numel for t in self.targets}

    def supported(self, name: str) -> bool:
        """Whether the current criterion can score ``name`` (BN-scale cannot score a layer with no BatchNorm)."""
        return self._ranks.get(name) is not None

    def layer_stats(self) -> list[LayerStats]:
        return [
            LayerStats(t.name, t.kind, t.shape, t.numel, self._zeros[t.name], self._channels_pruned(t))
            for t in self.targets
        ]

    def summary(self) -> Summary:
        """Totals: parameters, prunable, nonzero, sparsity and compression."""
        return summarize(self.model, self.layer_stats())

    def pruned_magnitude_threshold(self, name: str) -> float | None:
        """Largest |w| among the pruned weights of ``name`` (the magnitude cut), or None if none is pruned."""
        if self._zeros[name] == 0:
            return None
        return float(self._originals[name][~self.mask(name)].abs().max())

    def scores(self, name: str, structured: bool = False) -> torch.Tensor | None:
        """Importance scores of ``name`` under the current criterion (per weight, or per channel)."""
        self._check_name(name)
        crit = self._criterion(self._plan.criterion)
        if structured:
            return self._channel_scores(crit)[name]
        return crit.weight_scores(self._sub_ctx([self._by_name[name]]))[name]

    # ------------------------------------------------------------------ events
    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` after every change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, reason: str, layers: tuple[str, ...]) -> None:
        event = SessionEvent(reason, layers, self._plan, self.generation)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken view must not break the session
                log.exception("pruneviz: a session listener raised")

    # ----------------------------------------------------------------- changes
    def set_sparsity(self, name: str, value: float) -> SessionEvent:
        """Set one layer's sparsity (structured scope: its ratio of channels removed).

        In global scope this switches to layer scope, starting from the sparsities the global threshold implies.
        """
        self._check_name(name)
        v = check_sparsity(value, f"layer {name!r}")
        self._check_supported([name], {name: v})
        plan = self._plan
        base = self.layer_sparsities() if plan.scope == "global" else dict(plan.sparsity)
        base[name] = v
        scope = "layer" if plan.scope == "global" else plan.scope
        if scope == "structured":
            base = self._group_values(base, [name])
        return self.apply_plan(plan.with_(scope=scope, sparsity=base), reason="set")

    def set_sparsities(self, values: Mapping[str, float]) -> SessionEvent:
        """Set several layers' sparsities in one change."""
        for name in values:
            self._check_name(name)
        checked = {n: check_sparsity(v, f"layer {n!r}") for n, v in values.items()}
        self._check_supported(checked, checked)
        plan = self._plan
        base = self.layer_sparsities() if plan.scope == "global" else dict(plan.sparsity)
        base.update(checked)
        scope = "layer" if plan.scope == "global" else plan.scope
        if scope == "structured":
            base = self._group_values(base, list(checked))
        return self.apply_plan(plan.with_(scope=scope, sparsity=base), reason="set")

    def set_global_sparsity(self, value: float) -> SessionEvent:
        """The global slider: one threshold over all layers (global scope), the same sparsity for every
        layer (layer scope), or the same channel ratio for every layer but the output layer (structured)."""
        v = check_sparsity(value, "the global slider")
        plan = self._plan
        if plan.scope == "global":
            return self.apply_plan(plan.with_(global_sparsity=v), reason="set")
        skip = set(self._protected) if plan.scope == "structured" else set()
        sparsity = {n: (0.0 if n in skip else v) for n in self._by_name}
        return self.apply_plan(plan.with_(global_sparsity=v, sparsity=sparsity), reason="set")

    def set_criterion(self, criterion: str | Criterion) -> SessionEvent:
        """Rank by another criterion, keeping the sparsities."""
        crit = self._criterion(criterion)
        return self.apply_plan(self._plan.with_(criterion=crit.name), reason="criterion")

    def set_scope(self, scope: str) -> SessionEvent:
        """Switch scope; the global slider's value carries over."""
        if scope not in SCOPES:
            raise PrunevizError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}.")
        plan = self._plan.with_(scope=scope)
        if scope != "global":
            skip = set(self._protected) if scope == "structured" else set()
            g = plan.global_sparsity
            plan = plan.with_(sparsity={n: (0.0 if n in skip else g) for n in self._by_name})
        return self.apply_plan(plan, reason="scope")

    def apply_plan(self, plan: Plan, reason: str = "plan", record: bool = True) -> SessionEvent:
        """Make ``plan`` the current plan (validated first: on error nothing changes)."""
        plan = self._validate(plan)
        key, ranks = self._ranks_for(plan)  # may raise: nothing has changed yet
        unsupported = {n: 0.0 for n, r in ranks.items() if r is None and plan.sparsity[n] > 0}
        if unsupported:  # layers the criterion cannot score stay dense
            plan = plan.with_(sparsity={**plan.sparsity, **unsupported})
        with self.lock:
            self._rank_key, self._ranks = key, ranks  # the previous ranks are dropped: memory stays ~1x
            changed = self._apply(plan)
            self._plan = plan
            if record and plan != self._history[self._pos]:
                del self._history[self._pos + 1 :]
                self._history.append(plan)
                if len(self._history) > MAX_HISTORY:
                    del self._history[0]
                self._pos = len(self._history) - 1
            self.generation += 1
        self._emit(reason, changed)
        return SessionEvent(reason, changed, plan, self.generation)

    def reset(self) -> SessionEvent:
        """Back to the original weights (bit-identical); the criterion and scope stay.

        Undoable, unless the session was rebased (fine-tuned): then reset restores the pretrained model
        (every parameter and buffer as at the first rebase's snapshot) and starts a new history.
        """
        plan = self._plan.with_(sparsity=dict.fromkeys(self._by_name, 0.0), global_sparsity=0.0)
        if self._initial is not None:
            self._restore_pretrained()
        return self.apply_plan(plan, reason="reset")

    @property
    def can_undo(self) -> bool:
        return self._pos > 0

    @property
    def can_redo(self) -> bool:
        return self._pos < len(self._history) - 1

    def undo(self) -> SessionEvent | None:
        """Go back one step in the history (None if there is nothing to undo)."""
        if not self.can_undo:
            return None
        self._pos -= 1
        return self.apply_plan(self._history[self._pos], reason="undo", record=False)

    def redo(self) -> SessionEvent | None:
        """Go forward one step in the history (None if there is nothing to redo)."""
        if not self.can_redo:
            return None
        self._pos += 1
        return self.apply_plan(self._history[self._pos], reason="redo", record=False)

    @property
    def history(self) -> list[Plan]:
        return list(self._history)

    @property
    def history_position(self) -> int:
        return self._pos

    def couple_channels(self, example_input: Any = None) -> list[list[str]]:
        """Let the layers whose output channels are coupled (a residual add, a depthwise conv) prune the same
        channels in structured scope: their channel scores are summed and ranked once for all of them. Without
        it, a ResNet's residual stream keeps every channel any of its writers keeps, and physical removal can
        only drop the channels inside blocks. Returns the groups (target names); the plan in force is re-applied.
        Called on the first structured ranking when the session was given ``example_input``."""
        if example_input is not None:
            self._example_input = example_input
        if self._example_input is None:
            raise PrunevizError("couple_channels needs an example input: pass one sample of the model's inputs.")
        with self.lock:
            self._couple(quiet=False)
            self._rank_key, self._ranks = None, {}
        self.apply_plan(self._plan, reason="couple", record=False)
        return self.coupled

    @property
    def coupled(self) -> list[list[str]]:
        """The coupled layer groups structured scope prunes together ([] before :meth:`couple_channels`)."""
        return [list(g) for g in self._coupled or []]

    def unit_group(self, name: str) -> list[str]:
        """The tensors that prune the same units as ``name`` in structured scope (itself alone for most layers;
        an RNN layer's weight_ih and weight_hh together)."""
        self._check_name(name)
        for members in self._unit_groups.values():
            if name in members:
                return list(members)
        return [name]

    @property
    def output_layers(self) -> tuple[str, ...]:
        """The layers the global slider leaves alone in structured scope (the output head: removing their
        channels would remove classes or box coordinates). Default: the last layer; see ``protect``."""
        return self._protected

    def protect(self, layers: Sequence[str | type]) -> None:
        """Make ``layers`` (names, patterns or types) the output head left alone by the global slider in
        structured scope; takes effect at the next global-slider or scope change."""
        self._protected = self._resolve_protect(layers)

    # --------------------------------------------------------------- internals
    def _resolve_protect(self, layers: Sequence[str | type] | None) -> tuple[str, ...]:
        if layers is None:
            return (self.output_layer,)
        if isinstance(layers, str | type):
            layers = [layers]
        from .targets import matching

        names = matching(self.targets, list(layers), "protect")
        return tuple(names)

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str):
            raise UnknownLayerError(
                f"layer names are strings such as {self.targets[0].name!r}, not {type(name).__name__} {name!r}; "
                "see session.names.")
        if name not in self._by_name:
            raise UnknownLayerError(
                f"{name!r} is not a prunable tensor of this session." + suggest(name, self._by_name)
                + f" Names look like {self.targets[0].name!r}; see session.names."
            )

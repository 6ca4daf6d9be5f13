"""Export: the recipe (JSON) and the pruned model, saved into a folder (notebooks: the user owns the process)
or downloaded by the browser (the app: a visitor's text never becomes a path on the server).

Model forms: masked (``torch.nn.utils.prune`` masks attached, or made permanent), or the *smaller model*: the
structurally pruned channels physically removed (:func:`pruneviz.core.removal.slim`), as a ``.pt`` file of plain
data that reloads with ``torch.load(weights_only=True)`` + ``pruneviz.load_slim`` (checked by reloading it
before it is offered), or as ONNX (checked in ONNX Runtime)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..core import export_pruned_model, save_recipe
from ..core.errors import CheckpointError, PrunevizError
from ..core.export import pruned_model_bytes
from ..core.files import atomic_write
from ..core.recipe import recipe_bytes
from .base import ViewContext, esc, fmt_count, fmt_x
from .download import Downloader, safe_name

EXPORT_FORMS = (
    ("masks attached (torch.nn.utils.prune)", "torch_prune"),
    ("permanent (pruned weights = 0)", "permanent"),
    ("smaller model (.pt: reloads with torch.load(weights_only=True) + pruneviz.load_slim)", "slim_pt"),
    ("smaller model (ONNX)", "slim_onnx"),
)
SLIM_FORMS = ("slim_pt", "slim_onnx")
#: "folder": a path box and Save buttons; "download": Download buttons, no path box
EXPORT_MODES = ("folder", "download")


def _full() -> widgets.Layout:
    return widgets.Layout(width="100%")


class ExportPanel(widgets.VBox):
    """Parts: ``form`` (model form), ``recipe_button``, ``model_button``, ``result`` (HTML); in folder mode also
    ``path`` (Text); in download mode ``downloader`` (the invisible widget that hands files to the browser).
    ``example_input``: one sample the model takes, for the smaller-model forms (default: the live evaluator's)."""

    def __init__(self, ctx: ViewContext, mode: str = "folder", name: str = "model", example_input: Any = None) -> None:
        if mode not in EXPORT_MODES:
            raise ValueError(f"export mode {mode!r}: choose one of {', '.join(EXPORT_MODES)}.")
        self.ctx, self.mode, self.example_input = ctx, mode, example_input
        self.name = safe_name(name, "model")
        self.form = widgets.Dropdown(options=EXPORT_FORMS, value="torch_prune", description="Model",
                                     layout=_full(), style={"description_width": "64px"})
        self.result = widgets.HTML(layout=_full())
        self.result.add_class("pv-export-result")
        self.path: widgets.Text | None = None
        self.downloader: Downloader | None = None
        verb = "Save" if mode == "folder" else "Download"
        self.recipe_button = widgets.Button(description=f"{verb} recipe (JSON)", icon="file-text-o",
                                            layout=widgets.Layout(width="100%"))
        self.model_button = widgets.Button(description=f"{verb} pruned model", icon="download",
                                           layout=widgets.Layout(width="100%"))
        self.recipe_button.add_class("pv-save-recipe")
        self.model_button.add_class("pv-save-model")
        parts: list[widgets.Widget] = []
        if mode == "folder":
            self.path = widgets.Text(value="pruneviz_export", description="Folder", placeholder="a folder, or a file path",
                                     layout=_full(), style={"description_width": "64px"})
            self.path.add_class("pv-export-path")
            parts.append(self.path)
        else:
            self.downloader = Downloader()
        parts += [self.form, self.model_button, self.recipe_button, self.result]
        if self.downloader is not None:
            parts.append(self.downloader)
        doing = "save" if mode == "folder" else "download"
        self.recipe_button.on_click(ctx.guard(f"{doing} the recipe", source="export")(self._recipe))
        self.model_button.on_click(ctx.guard(f"{doing} the model", source="export")(self._model))
        self.form.observe(lambda _change: self._label(), "value")
        super().__init__(parts, layout=_full())
        self.add_class("pv-export")

    # ------------------------------------------------------------------ folder mode
    def _typed_path(self) -> str:
        return (self.path.value.strip() if self.path is not None else "") or "pruneviz_export"

    @contextlib.contextmanager
    def _plain_file_errors(self) -> Iterator[None]:
        """An operating-system error while saving, as a sentence naming the path typed and the way out."""
        try:
            yield
        except OSError as e:
            raw = self._typed_path()
            if e.errno == errno.ENOSPC:
                raise CheckpointError(f"nothing was saved to {raw}: the disk is full. Free some space or choose a "
                                      f"folder on another disk.") from e
            reason = e.strerror or type(e).__name__
            raise CheckpointError(f"nothing was saved to {raw} ({reason}). Choose a folder you can write to, "
                                  f"e.g. pruneviz_export.") from e

    def _label(self) -> None:
        verb = "Save" if self.mode == "folder" else "Download"
        what = "smaller model" if self.form.value in SLIM_FORMS else "pruned model"
        self.model_button.description = f"{verb} {what}"

    def _target_path(self, kind: str) -> Path:
        p = Path(self._typed_path()).expanduser()
        names = {"recipe": "recipe.json", "model": "pruned_model.pt", "slim_pt": "smaller_model.pt",
                 "slim_onnx": "smaller_model.onnx"}
        if p.suffix:
            if kind == "recipe":
                path = p.with_suffix(".json")
            elif kind == "slim_onnx":
                path = p.with_suffix(".onnx")
            else:
                path = p if p.suffix in (".pt", ".pth") else p.with_suffix(".pt")
        else:
            path = p / names[kind]
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.resolve()

    def _report(self, text: str, ok: bool) -> None:
        color = "#15803d" if ok else "#b91c1c"
        self.result.value = f'<span style="color:{color}">{text}</span>'

    # ------------------------------------------------------------------ actions
    def _recipe(self, _button: object = None) -> Path | str:
        s = self.ctx.session
        try:
            if self.downloader is not None:
                out: Path | str = self.downloader.send_file(f"pruneviz-recipe-{self.name}.json", recipe_bytes(s),
                                                            "application/json")
            else:
                with self._plain_file_errors():
                    out = save_recipe(s, self._target_path("recipe"))
        except Exception:
            self._report("Not saved (see the message above).", ok=False)
            raise
        self.ctx.errors.clear("export")
        where = "downloaded as" if self.downloader is not None else "saved to"
        self._report(f"Recipe {where} <code>{esc(out)}</code>", ok=True)
        return out

    def _model(self, _button: object = None) -> Path | str:
        s, form = self.ctx.session, self.form.value
        if form in SLIM_FORMS:
            return self._smaller(form)
        try:
            if self.downloader is not None:
                out: Path | str = self.downloader.send_file(f"pruneviz-{self.name}-{form}.pt",
                                                            pruned_model_bytes(s, form))
            else:
                with self._plain_file_errors():
                    out = export_pruned_model(s, self._target_path("model"), form=form)
        except Exception:
            self._report("Not saved (see the message above).", ok=False)
            raise
        self.ctx.errors.clear("export")
        how = "with torch.nn.utils.prune masks" if form == "torch_prune" else "with pruned weights set to 0"
        where = "downloaded as" if self.downloader is not None else "saved to"
        self._report(f"Pruned model ({how}) {where} <code>{esc(out)}</code>", ok=True)
        return out

    # ------------------------------------------------------------------ the smaller model
    def _example(self) -> Any:
        if self.example_input is not None:
            return self.example_input
        live = self.ctx.live
        if live is None:
            raise PrunevizError("the smaller model needs one example input to trace the model: open the explorer with "
                                "data, or with example_input=x[:1]. The masked forms work without it.")
        return live.evaluator.example_input(1)

    def _smaller(self, form: str) -> Path | str:
        from ..core.removal import slim
        from ..core.removal_arch import find_architecture
        from ..core.slim_export import onnx_bytes, slim_bytes
        from ..core.tasks import call_model

        s, x = self.ctx.session, self._example()
        status = self.ctx.status
        status.set_busy("export", True, "preparing the smaller model")
        try:
            result = slim(s, x, forward_fn=call_model)
            if not result.removed:
                why = (result.note or "nothing could be removed").rstrip(".")
                raise PrunevizError(f"there is no smaller model to export ({why}). The masked forms still work.")
            if form == "slim_pt":
                arch = find_architecture(s.model)
                if not arch.found:
                    raise PrunevizError(
                        f"the smaller model's .pt file must name how to rebuild {type(s.model).__name__}, and pruneviz "
                        f"cannot: {arch.reason}. Export it as ONNX (or a masked form) here, or in code: "
                        "pv.save_slim(pv.slim(session, x), 'model.pt', arch=MyModel, arch_kwargs={...}).")
                data, ext = slim_bytes(result, s.model, x, arch=arch, forward_fn=call_model), "pt"
            else:
                data, ext = onnx_bytes(result.model, x, exporter="legacy")[0], "onnx"
            if self.downloader is not None:
                out: Path | str = self.downloader.send_file(f"pruneviz-{self.name}-smaller.{ext}", data)
            else:
                with self._plain_file_errors():
                    out = atomic_write(self._target_path(form), lambda f: f.write(data))
        except Exception:
            self._report("Not saved (see the message above).", ok=False)
            raise
        finally:
            status.set_busy("export", False)
        self.ctx.errors.clear("export")
        where = "downloaded as" if self.downloader is not None else "saved to"
        how = ("reload it with <code>pruneviz.load_slim(path)</code> (plain data: "
               "<code>torch.load(path, weights_only=True)</code> reads it)" if form == "slim_pt"
               else "checked in ONNX Runtime")
        self._report(f"Smaller model ({fmt_count(result.params_after)} parameters, {100 * (1 - result.params_ratio):.0f} %"
                     f" fewer; FLOPs {fmt_x(1 / max(result.macs_ratio, 1e-9))} fewer) {where} <code>{esc(out)}</code>: "
                     f"{how}.", ok=True)
        return out

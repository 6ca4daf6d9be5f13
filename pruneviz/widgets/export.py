"""Export: the recipe (JSON) and the pruned model, saved into a folder (notebooks: the user owns the process)
or downloaded by the browser (the app: a visitor's text never becomes a path on the server)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as widgets

from ..core import export_pruned_model, save_recipe
from ..core.errors import CheckpointError
from ..core.export import pruned_model_bytes
from ..core.recipe import recipe_bytes
from .base import ViewContext, esc
from .download import Downloader, safe_name

EXPORT_FORMS = (
    ("masks attached (torch.nn.utils.prune)", "torch_prune"),
    ("permanent (pruned weights = 0)", "permanent"),
)
#: "folder": a path box and Save buttons; "download": Download buttons, no path box
EXPORT_MODES = ("folder", "download")


def _full() -> widgets.Layout:
    return widgets.Layout(width="100%")


class ExportPanel(widgets.VBox):
    """Parts: ``form`` (model form), ``recipe_button``, ``model_button``, ``result`` (HTML); in folder mode also
    ``path`` (Text); in download mode ``downloader`` (the invisible widget that hands files to the browser)."""

    def __init__(self, ctx: ViewContext, mode: str = "folder", name: str = "model") -> None:
        if mode not in EXPORT_MODES:
            raise ValueError(f"export mode {mode!r}: choose one of {', '.join(EXPORT_MODES)}.")
        self.ctx, self.mode = ctx, mode
        self.name = safe_name(name, "model")
        self.form = widgets.Dropdown(options=EXPORT_FORMS, value="torch_prune", description="Model",
                                     layout=_full(), style={"description_width": "64px"})
        self.result = widgets.HTML(layout=_full())
        self.result.add_class("pv-export-result")
        self.path: widgets.Text | None = None
        self.downloader: Downloader | None = None
        verb = "Save" if mode == "folder" else "Download"
        self.recipe_button = widgets.Button(description=f"{verb} recipe (JSON)", icon="file-text-o",
                                            layout=widgets.Layout(width="49%"))
        self.model_button = widgets.Button(description=f"{verb} pruned model", icon="download",
                                           layout=widgets.Layout(width="49%"))
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
        parts += [self.form, widgets.HBox([self.recipe_button, self.model_button], layout=_full()), self.result]
        if self.downloader is not None:
            parts.append(self.downloader)
        doing = "save" if mode == "folder" else "download"
        self.recipe_button.on_click(ctx.guard(f"{doing} the recipe", source="export")(self._recipe))
        self.model_button.on_click(ctx.guard(f"{doing} the pruned model", source="export")(self._model))
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

    def _target_path(self, kind: str) -> Path:
        p = Path(self._typed_path()).expanduser()
        if p.suffix:
            if kind == "recipe":
                path = p.with_suffix(".json")
            else:
                path = p if p.suffix in (".pt", ".pth") else p.with_suffix(".pt")
        else:
            path = p / ("recipe.json" if kind == "recipe" else "pruned_model.pt")
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

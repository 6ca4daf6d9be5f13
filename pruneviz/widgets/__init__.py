"""Jupyter/Voila views over a PruningSession; ``explore`` composes them into one dashboard.

Importing this package imports ipywidgets and plotly; ``import pruneviz`` alone does not.
"""

from .explorer import Explorer, explore

__all__ = ["Explorer", "explore"]

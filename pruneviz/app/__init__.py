"""The standalone app served by Voila (``notebooks/dashboard.ipynb``)."""

from .dashboard import dashboard

__all__ = ["dashboard"]

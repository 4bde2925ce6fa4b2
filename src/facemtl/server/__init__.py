"""The HTTP API and the operator page (install ``facemtl[serve]``): ``facemtl serve``.

    from facemtl.server import create_app
    app = create_app(store=Store(url), predictor=load_predictor())   # serve with uvicorn
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]

"""``zoo serve``: the registry as an HTTP service and a caching mirror of ``$ZOO_HOME``.

Light on purpose: Starlette and uvicorn (the ``serve`` extra) are imported by
``zoo.serve.app`` only, when an app is built. docs/serve.md describes the routes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The Starlette app (see :func:`zoo.serve.app.create_app`); MissingExtra without the extra."""
    from zoo.errors import require

    require("serve", "starlette", what="zoo.serve.create_app")
    from zoo.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)

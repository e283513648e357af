"""The web app: ``python -m mindram.app`` (see ``mindram/app/__main__.py`` and docs/app.md).

- :mod:`mindram.app.service`: what the app does, without the web (input checks, pipelines, results);
- :mod:`mindram.app.store`: the search tab's embedding store;
- :mod:`mindram.app.demo`: ``--demo``'s tiny models and generated store;
- :mod:`mindram.app.ui`: the Gradio page (imported only when the app starts: gradio is an optional dependency,
  ``pip install 'mindram[app]'``).
"""
from ..utils.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"AppService": ".service", "check_image": ".service",
                                               "ImageStore": ".store"})

__all__ = ["AppService", "ImageStore", "check_image"]

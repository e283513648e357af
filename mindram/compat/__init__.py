"""Drop-in layers for code, configs and weights written for the systems mindram replaces (docs/migrating.md).

- :mod:`mindram.compat.recognize_anything`: recognize-anything's ``ram``, ``ram_plus``, ``get_transform``,
  ``inference_ram``, ``inference_ram_openset``, ``build_openset_llm_label_embedding`` over mindram's RAM API.
- :mod:`mindram.compat.paddleclas`: PaddleClas RAM YAML (``Global``/``Arch``/...) → mindram run config
  (``python -m mindram.compat.paddleclas CONFIG.yaml [-o OUT.yaml]``).

Each is a thin translation onto mindram's own classes: no second implementation of a model or a rule.
"""

"""Gradient checkpointing from the run config (MindFormers' ``recompute_config``), with MindSpore's
``Cell.recompute()``: the activations inside a recomputed block are not kept for the backward pass but computed
again from the block's input, trading compute for memory. Models are not edited; the trainer marks their cells.

    recompute_config:
      recompute: true                     # every block of every tower
      recompute: [visual]                 # the blocks of one tower (a cell name of the model)
      recompute: [text.transformer.resblocks.0, text.transformer.resblocks.1]   # single blocks

A *block* is an element of an innermost ``nn.CellList`` (a transformer's ``resblocks``, a Swin stage's
``blocks``); a named cell holding no such list is recomputed as one unit.
"""
import logging

from mindspore import nn

from ..errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["RECOMPUTE_CONFIG_KEYS", "apply_recompute", "check_recompute_config"]

RECOMPUTE_CONFIG_KEYS = {"recompute"}


def check_recompute_config(section):
    """The ``recompute`` value of a ``recompute_config`` section (False, True or a list of cell names)."""
    section = section or {}
    if not isinstance(section, dict):
        raise ConfigError(f"recompute_config: expected a mapping, got {section!r}")
    unknown = sorted(set(section) - RECOMPUTE_CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"recompute_config: unknown key(s) {unknown}; allowed: {sorted(RECOMPUTE_CONFIG_KEYS)}")
    value = section.get("recompute", False)
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ConfigError(f"recompute_config.recompute: expected true, false or a list of cell names "
                      f"(e.g. [visual, text]), got {value!r}")


def _innermost_lists(cell, prefix):
    """``(name, CellList)`` of the lists under ``cell`` that hold no other list."""
    lists = [(name, c) for name, c in cell.cells_and_names(name_prefix=prefix) if isinstance(c, nn.CellList)]
    return [(name, c) for name, c in lists
            if not any(isinstance(sub, nn.CellList) for _, sub in c.cells_and_names() if sub is not c)]


def _find(model, name):
    cells = dict(model.cells_and_names())
    if name not in cells:
        names = sorted(n for n in cells if n and n.count(".") < 2)
        raise ConfigError(f"recompute_config.recompute: {type(model).__name__} has no cell {name!r}; "
                          f"e.g. {names[:12]}")
    return cells[name]


def apply_recompute(model, spec):
    """Mark the blocks ``spec`` selects (see the module docstring) with ``Cell.recompute()``; return their names."""
    spec = check_recompute_config({"recompute": spec})
    if not spec:
        return []
    roots = [("", model)] if spec is True else [(name, _find(model, name)) for name in spec]
    marked = []
    for prefix, root in roots:
        lists = _innermost_lists(root, prefix)
        blocks = [(f"{name}.{i}", block) for name, cell_list in lists for i, block in enumerate(cell_list)] \
            if lists else [(prefix, root)]
        for name, block in blocks:
            block.recompute()
            marked.append(name)
    logger.info("recompute: %d block(s) of %s (%s%s)", len(marked), type(model).__name__, ", ".join(marked[:4]),
                ", ..." if len(marked) > 4 else "")
    return marked

"""Which weights a run starts from, and which architecture runs them.

A run starts from random initialisation (no ``load_checkpoint``) or from located weights
(:meth:`~mindram.models.modeling_utils.PreTrainedModel.locate_weights`): a catalog name, a directory or a
checkpoint file. Weights that declare their architecture (their catalog record, the ``config.yaml`` of their
directory, the ``<stem>.yaml`` the converters write beside a checkpoint) are never run as another one: where the
run config's ``model.model_config`` describes another architecture with the same parameter shapes (e.g. QuickGELU
where the weights are GELU), the weights' architecture runs, with a warning naming both; where the shapes differ
the run is refused. The run config keeps what it may choose for itself (:func:`run_settings`: compute dtype,
batching, tag files and thresholds, ...).
"""
import gc
import logging

from .. import catalog, hub
from ..errors import CheckpointError, ConfigError
from ..registry import MindFormerModuleType, MindFormerRegister
from ..utils.random import no_init_weights
from ..utils.mappings import flatten

logger = logging.getLogger(__name__)

#: config fields any run config chooses for itself, whatever its weights declare
COMMON_RUN_SETTINGS = ("checkpoint_name_or_path", "compute_dtype")
#: differing fields a warning or an error names
MAX_LISTED = 6


def run_settings(config):
    """Dotted config keys a run config sets for itself (not the weights' architecture): :data:`COMMON_RUN_SETTINGS`
    and the config class's ``run_settings``."""
    return COMMON_RUN_SETTINGS + tuple(getattr(type(config), "run_settings", ()))


def _is_setting(key, settings):
    return any(key == s or key.startswith(s + ".") for s in settings)


def architecture_differences(run_config, weights_config):
    """``[(dotted key, run config's value, weights' value)]`` of the fields that differ, run settings left out
    (a nested config that is None on one side counts as one differing key)."""
    if type(run_config) is not type(weights_config):
        return [("type", type(run_config).__name__, type(weights_config).__name__)]
    settings = run_settings(run_config)
    ours, theirs = flatten(run_config.to_dict()), flatten(weights_config.to_dict())
    return [(key, ours.get(key), theirs.get(key)) for key in sorted(set(ours) | set(theirs))
            if not _is_setting(key, settings) and ours.get(key) != theirs.get(key)]


def architecture_name(config):
    """The catalog architecture (``model/<arch>.yaml`` stem) whose architecture ``config`` is, else None."""
    family = getattr(config, "family", None)
    if not family:
        return None
    for arch in catalog.architectures(family):
        try:
            known = type(config).from_yaml(catalog.arch_file(family, arch))
        except ConfigError:  # a file this config class cannot read: not its architecture
            continue
        if not architecture_differences(config, known):
            return arch
    return None


def _with_run_settings(weights_config, run_config, name):
    """``weights_config`` with the run settings of ``run_config`` (those it has too); ``checkpoint_name_or_path``
    names the weights (catalog name, else what they declare, else the run config's)."""
    data, theirs, ours = weights_config.to_dict(), flatten(weights_config.to_dict()), flatten(run_config.to_dict())
    settings = run_settings(run_config)
    for key, value in ours.items():
        if key in theirs and _is_setting(key, settings):
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[last] = value
    if "checkpoint_name_or_path" in data:
        data["checkpoint_name_or_path"] = name or theirs.get("checkpoint_name_or_path") or \
            ours.get("checkpoint_name_or_path")
    return type(weights_config).from_dict(data)


def _shapes(cls, config):
    """``{name: shape}`` of ``cls(config)``'s parameters, built without computing any value."""
    with no_init_weights():
        model = cls(config)
    shapes = model.checkpoint_shapes()
    del model
    gc.collect()
    return shapes


def _shape_differences(ours, theirs):
    names = sorted(set(ours) | set(theirs))
    return [f"{n}: run config {ours.get(n, 'absent')} vs weights {theirs.get(n, 'absent')}"
            for n in names if ours.get(n) != theirs.get(n)]


def model_class_of(config, default):
    """The registered model class ``config`` declares (``arch_type()``), else ``default``."""
    arch_type = getattr(config, "arch_type", None)
    name = arch_type() if callable(arch_type) else None
    if name and name in MindFormerRegister.names(MindFormerModuleType.MODELS):
        return MindFormerRegister.get_cls(MindFormerModuleType.MODELS, name)
    return default


def choose_architecture(cls, run_config, weights, load):
    """``(model class, config)`` that run ``weights`` (:class:`LocatedWeights`) given as ``load``.

    Weights without a declared architecture run as ``run_config`` (their shapes are checked on loading, or, with
    no run config either, inferred from them). Without a run config they run as they declare. Otherwise their
    declared architecture runs, with the run config's :func:`run_settings`: silently when the run config
    describes the same architecture, with a warning naming both when it describes another one of the same
    parameter shapes; a run config whose architecture has other shapes is a :class:`CheckpointError`."""
    declared = weights.config
    if declared is None:
        return cls, run_config if run_config is not None else cls._config_for_checkpoint(weights.file)
    weights_cls = model_class_of(declared, cls)
    if run_config is None:
        return weights_cls, _with_run_settings(declared, declared, weights.name)
    differences = architecture_differences(run_config, declared)
    config = _with_run_settings(declared, run_config, weights.name)
    if not differences:
        return weights_cls, config
    theirs = weights.arch or architecture_name(declared)
    ours = architecture_name(run_config)
    theirs_text = f"architecture {theirs}" if theirs else "their own architecture"
    ours_text = f"architecture {ours}" if ours else "another architecture"
    listed = ", ".join(f"{k} {a!r} (weights: {b!r})" for k, a, b in differences[:MAX_LISTED])
    listed += " ..." if len(differences) > MAX_LISTED else ""
    shape_differences = _shape_differences(_shapes(cls, run_config), _shapes(weights_cls, config))
    if shape_differences:
        raise CheckpointError(
            f"load_checkpoint {load}: the weights declare {theirs_text} ({weights.declared_by}) but the run config's "
            f"model.model_config is {ours_text}, whose parameters have other shapes ({len(shape_differences)} differ, "
            f"e.g. {'; '.join(shape_differences[:3])}); remove model.model_config (and its base_config) from the run "
            f"config to run the weights in their own architecture, or load weights of {ours_text}")
    logger.warning("load_checkpoint %s: the weights declare %s (%s); the run config's model.model_config is %s, "
                   "which differs in %s: running them as declared (%s)", load, theirs_text, weights.declared_by,
                   ours_text, listed, theirs or weights.declared_by)
    return weights_cls, config


def describe_weights(weights):
    """``<file> (sha256 <hex>, <name or where the architecture comes from>)`` of located weights."""
    origin = weights.name or weights.declared_by or "architecture from the run config or the weights' shapes"
    return f"{weights.file} (sha256 {hub.sha256_of(weights.file)}, {origin})"

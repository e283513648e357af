"""Nested mappings as flat dotted keys (config comparisons, resume checks)."""


def flatten(mapping, prefix=""):
    """``{"a": {"b": 1}, "c": 2}`` → ``{"a.b": 1, "c": 2}`` (nested dicts only; lists are values)."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

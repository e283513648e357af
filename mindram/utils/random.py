"""Seedable weight initialisation: every initialiser draws from a generator seeded off NumPy's global
state, so ``np.random.seed(s)`` (the Trainer does it from the config's ``seed``) fixes all initial weights."""
import numpy as np


def init_rng():
    """A fresh ``np.random.Generator`` whose seed comes from the global NumPy RNG."""
    return np.random.default_rng(int(np.random.randint(0, 2 ** 31 - 1)))

"""Numba kernels: dequantization, metrics, top-k and segment ranking (each in its module). This package
module itself imports no Numba."""

FREEZE_AFTER_WARM_UP = False
"""Set by the command line (one verb a process): the first warm.warm_up then ends with gc.freeze(), so
that the cyclic collector never walks what start-up loaded (Python's modules and Numba's registries, ~1M
objects that live as long as the process). Two full collections of them were ~0.1 s of an eval of 2000
videos, one of them at exit. Once only, and off for a library caller: a freeze keeps any cyclic garbage
there is at that moment for good."""

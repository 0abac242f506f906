"""The one compiled part: galore/_regions.c, the regions stage on the CPU (galore/regions.py uses it when built,
its torch block path otherwise). Everything else is declared in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "galore._regions", ["galore/_regions.c"],
    # a cell's value must be the bits of torch's separate products and sum: no fused multiply-add, no fast math
    extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math", "-std=c11"],
    optional=True,  # no C compiler: the package installs and the torch path runs (the tests say so under CI=true)
)])

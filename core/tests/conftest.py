"""Hypothesis settings for the core tests: no per-example deadline, since CI machines are shared and a
slow example is not a wrong one (tests check correctness; `nox -s bench` measures speed)."""

from hypothesis import settings

settings.register_profile("grocerysync", deadline=None)
settings.load_profile("grocerysync")

"""TRL's config classes, imported only when needed (TRL is heavy, and `trl.experimental` warns on import).

The bottom of `fapo.train`: config validation and both trainers ask here for the classes whose fields they
check or fill, so neither has to import the other.
"""

from __future__ import annotations


def grpo_config_class():
    """TRL's GRPOConfig."""
    from trl import GRPOConfig

    return GRPOConfig


def async_config_class():
    """TRL's AsyncGRPOConfig (`trl.experimental.async_grpo`), with the experimental-API warning silenced."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.async_grpo import AsyncGRPOConfig

    return AsyncGRPOConfig

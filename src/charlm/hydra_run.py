"""What charlm reads of the Hydra run a job is in. Light on purpose: the command line imports it before torch."""

from __future__ import annotations


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (`-m`), where one job must not end the others."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN

"""charlm's Hydra configs, installed as the package `charlm.conf` (read with `pkg://charlm.conf`)."""

"""The command line: the console commands (`app`), argv handling and one-line errors (`argv`), peers'
names (`charlm.dialects`), `resume=` (`resume`), torchrun/srun launches (`launch`) and the run directory's
lifecycle (`rundir`). Nothing below this layer imports it."""

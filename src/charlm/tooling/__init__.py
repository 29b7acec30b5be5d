"""Tooling around the core: throughput benchmarks, sweep records and summaries, DDP inside a
Hydra multirun, and the allocator setting. The models, data and training module never import it."""

"""The jobs: one module each (train, generate, evaluate, inspect), each a `run`-style function a console
command calls with its composed config. Jobs share what they share through the core and never import
each other."""

"""dotrio's benchmark suite: ``python -m benchmarks SCENARIO`` (also
``dotrio bench SCENARIO``). See benchmarks/RESULTS.md for the latest figures
and ``python -m benchmarks --help`` for the scenarios and their options."""

__all__: list[str] = []

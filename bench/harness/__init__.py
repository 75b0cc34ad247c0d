"""The benchmark harness behind bench/run.sh, one module per concern (standard library only)."""

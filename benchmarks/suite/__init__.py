"""`python -m benchmarks.suite`: benchmark suites that run the same protocol for every policy (issue #13)."""

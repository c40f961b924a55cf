"""`jaxdiff bench` / `make bench`: throughput, compile-time and memory tables. This package sits
at the top of the dependency graph (beside the CLI): it may name algorithms; `jaxdiff.run` may
not."""

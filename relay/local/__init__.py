"""Local tooling, not the production relay: throwaway PostgreSQL and redis-server
(`embedded`), the whole system on them (`stack`) and `pgpulse demo` (`demo`). The
benchmarks, the dev server's launcher and the test suites build on these; of the production
modules only the `pgpulse demo` command imports them, when it runs."""

"""`fraudstream bench`: throughput, latency, memory, scale-out and trainer speed, measured
against the physical ceiling (a plain passthrough) on the same machine, in one run."""

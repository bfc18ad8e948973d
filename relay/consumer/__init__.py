"""The consumer side of the queue: the contract's v2 protocol (claim, ack, heartbeats), the
SSRF-safe check runner and `pgpulse worker`, the reference regional worker."""

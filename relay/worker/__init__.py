"""`pgpulse worker`: the queue contract's consumer side (claim, ack) and the SSRF-safe check."""

"""The delivery path (`pgpulse relay`): outbox rows to each region's queues, results back."""

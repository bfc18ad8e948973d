"""The ops surface: HTTP endpoints, status page, metrics, alerts, `pgpulse status` and `doctor`."""

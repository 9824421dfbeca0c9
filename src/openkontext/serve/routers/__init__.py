"""One router per resource: jobs (submit, poll, cancel), results (signed downloads), system
(health, metrics)."""

"""One router per resource: jobs (submit, poll, cancel), results (signed downloads), usage
(per API key), system (health, metrics)."""

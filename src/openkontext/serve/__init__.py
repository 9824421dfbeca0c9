"""The HTTP service: a FLUX.1 Kontext-compatible job API in front of the one pipeline.

Layout: `settings` (one pydantic-settings object), `schemas` (request/response models),
`store` (the SQL job store, the source of truth) and `usage` (totals per API key), `worker`
(runs the pipeline in batches on a thread) or `ray_executor` and `ray_deployment` (the pipeline
on Ray Serve replicas, docs/scale.md), `retention` (what is kept, and for how long),
`inputs` and `netguard` (image inputs and the outbound address policy), `moderation`,
`webhooks`, `urls` (absolute and signed URLs), `metrics`, `routers/` (one per resource) and
`app` (the factory that wires them). Nothing here runs at import time.
"""

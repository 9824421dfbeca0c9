"""Webhook delivery: the get_result body POSTed to the job's webhook_url, signed, retried.

Headers: `X-Webhook-Secret` (the request's webhook_secret, as the hosted API sends it),
`X-Webhook-Timestamp` (Unix seconds) and `X-Webhook-Signature: sha256=<hex>`, the HMAC-SHA256
with the secret as key over `<timestamp>.<body>`. A receiver recomputes it and rejects old
timestamps to stop replays. Deliveries run on their own threads: a slow or dead receiver never
holds up the worker. Failures (connection errors, 408, 429, 5xx) are retried with a doubling
backoff; the outcome is kept in the store (`webhook_state`). Deliveries cut short by a
shutdown stay `pending` and are sent again on start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from openkontext.serve import netguard
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, JobStore

log = logging.getLogger("openkontext.serve.webhooks")
RETRY_STATUSES = {408, 429}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                   hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Webhooks:
    def __init__(self, settings: ServeSettings, store: JobStore,
                 body_for: Callable[[Job], dict]):
        self.settings = settings
        self.store = store
        self.body_for = body_for  # job -> the get_result body, with absolute URLs
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webhook")
        self._stopping = threading.Event()

    def submit(self, job_id: str) -> None:
        if not self._stopping.is_set():
            self._pool.submit(self._deliver, job_id)

    def resume(self) -> None:
        for job in self.store.pending_webhooks():
            self.submit(job.id)

    def close(self) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _deliver(self, job_id: str) -> None:
        job = self.store.get(job_id)
        url = job and job.params.get("webhook_url")
        if not url:
            return
        s = self.settings
        body = json.dumps(self.body_for(job)).encode("utf-8")
        delay = s.webhook_backoff_seconds
        for attempt in range(1, s.webhook_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Webhook-Timestamp": timestamp}
            if job.webhook_secret:
                headers["X-Webhook-Secret"] = job.webhook_secret
                headers["X-Webhook-Signature"] = sign(job.webhook_secret, timestamp, body)
            try:
                status = netguard.post(url, s.fetch_allow_hosts, body, headers,
                                       s.webhook_timeout_seconds)
            except netguard.Refused as e:
                log.warning("webhook for job %s refused: %s", job_id, e)
                self.store.set_webhook_state(job_id, "failed")
                return
            except httpx.HTTPError as e:
                status, reason = None, str(e) or type(e).__name__
            else:
                reason = f"HTTP {status}"
                if status < 300:
                    self.store.set_webhook_state(job_id, "delivered")
                    return
                if status < 500 and status not in RETRY_STATUSES:
                    break
            log.info("webhook for job %s, attempt %d: %s", job_id, attempt, reason)
            if attempt < s.webhook_attempts and self._stopping.wait(delay):
                return  # shutting down: stays pending, resumed on the next start
            delay *= 2
        log.warning("webhook for job %s failed after %d attempts", job_id, attempt)
        self.store.set_webhook_state(job_id, "failed")

#!/usr/bin/env python3
"""A webhook receiver for agilepm's notifier, verifying Standard Webhooks signatures.

Python's standard library only. Run it, subscribe its URL (README.md, "Notifications"),
and give it the signing secret the subscription returned:

    WEBHOOK_SECRET=whsec_... python3 docs/webhook_receiver.py 8000

It prints one JSON line per verified notification and answers 204; a delivery whose
signature does not verify, or whose timestamp is more than five minutes off, gets 401.
It de-duplicates by `webhook-id`: a delivery retried after an answer the notifier did not
see arrives again with the same id, and is acknowledged without being handled twice.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60
# During a rotation's overlap either secret may verify: list both, comma-separated.
SECRETS = [s.strip() for s in os.environ["WEBHOOK_SECRET"].split(",") if s.strip()]
SEEN = set()  # a real receiver keeps these in its database, with what it did


def verify(secrets, msg_id, timestamp, body, signature_header):
    """The specification's reference algorithm: HMAC-SHA256 of "id.timestamp.body"
    under the secret's key (base64 after "whsec_"), compared in constant time with
    each "v1,<base64>" signature in the header."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent_at) > TOLERANCE_SECONDS:
        return False
    content = f"{msg_id}.{timestamp}.".encode() + body
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())
        for signature in signature_header.split(" "):
            version, _, value = signature.partition(",")
            if version == "v1" and hmac.compare_digest(value.encode(), expected):
                return True
    return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        if length > 1 << 20:
            self.send_response(413)
            self.end_headers()
            return
        body = self.rfile.read(length)
        msg_id = self.headers.get("webhook-id", "")
        if not verify(
            SECRETS,
            msg_id,
            self.headers.get("webhook-timestamp", ""),
            body,
            self.headers.get("webhook-signature", ""),
        ):
            self.send_response(401)
            self.end_headers()
            return
        if msg_id not in SEEN:
            SEEN.add(msg_id)
            notification = json.loads(body)
            print(json.dumps({"webhook_id": msg_id, **notification}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

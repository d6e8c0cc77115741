"""Verifies webhook deliveries with the Standard Webhooks reference library.

stdin: a JSON list of {"secret", "headers", "body"}; exits 0 when every one verifies,
1 naming the first that does not. tests/api/webhooks.rs runs it with .venv's python.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    deliveries = json.load(sys.stdin)
    for i, d in enumerate(deliveries):
        try:
            Webhook(d["secret"]).verify(d["body"], d["headers"])
        except Exception as e:  # the library raises its own WebhookVerificationError
            print(f"delivery {i} ({d['headers'].get('webhook-id')}) fails: {e!r}")
            return 1
    print(f"{len(deliveries)} deliveries verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())

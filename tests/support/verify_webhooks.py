"""Verifies webhook deliveries with the official Standard Webhooks library (PyPI `standardwebhooks`).

Reads a JSON list of cases from stdin, each {"secret", "headers", "body"}, and prints a JSON list of
{"ok": bool, "error": str|null}, one per case, so a Rust test can check what others' code accepts.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

results = []
for case in json.load(sys.stdin):
    try:
        Webhook(case["secret"]).verify(case["body"].encode("utf-8"), case["headers"])
        results.append({"ok": True, "error": None})
    except Exception as e:  # the library raises its own WebhookVerificationError
        results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
json.dump(results, sys.stdout)

#!/usr/bin/env python3
"""Independent re-implementation of SDK-HMAC-SHA256 (stdlib only, no SDK import)
checked against tests/fixtures/sdk_signatures.json.

It follows SIGNER.md step by step, so it doubles as an executable version of that
description (and a model for the Rust implementation). Run from the repo root:

    python3 tools/huawei-sdk/check_vectors.py
"""

import hashlib
import hmac
import json
import os
import sys
from urllib.parse import quote, unquote

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "sdk_signatures.json")
EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def enc(s):
    # RFC 3986 unreserved characters stay literal, everything else %XX (upper-case hex, UTF-8 bytes).
    return quote(s, safe="~")


def canonical_uri(path):
    segs = unquote(path).split("/")
    out = "/".join(enc(s) for s in segs)
    return out if out.endswith("/") else out + "/"


def query_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def canonical_query(pairs):
    # Sort by raw (unencoded) key, then raw value; list values are sorted and expanded.
    items = sorted((k, v) for k, v in pairs if not isinstance(v, list))
    lists = [(k, sorted(v)) for k, v in pairs if isinstance(v, list)]
    merged = sorted(items + [(k, tuple(v)) for k, v in lists], key=lambda kv: kv[0])
    out = []
    for k, v in merged:
        if isinstance(v, tuple):
            out.extend("%s=%s" % (enc(k), enc(str(x))) for x in v)
        else:
            out.append("%s=%s" % (enc(k), enc(query_value(v))))
    return "&".join(out)


def sign(case):
    ak = case["credentials"]["ak"]
    sk = case["credentials"]["sk"]
    headers = dict(case["input_headers"])
    body = case["body"].encode("utf-8")

    # BasicCredentials.sign_request
    headers["X-Project-Id"] = case["credentials"]["project_id"]
    # Signer._process_content_header
    ct = headers.get("Content-Type")
    if ct and not ct.startswith("application/json") and not ct.startswith("application/bson"):
        headers["X-Sdk-Content-Sha256"] = "UNSIGNED-PAYLOAD"
    # X-Sdk-Date is given in every fixture; otherwise: utcnow().strftime("%Y%m%dT%H%M%SZ")
    date = next(v for k, v in headers.items() if k.lower() == "x-sdk-date")
    # Host header unless present in any case
    if not any(k.lower() == "host" for k in headers):
        headers["Host"] = case["host"]

    lower = {}
    for k, v in headers.items():
        lower[k.lower()] = str(v).strip()
    signed = sorted(k.lower() for k in headers if "_" not in k)
    canon_headers = "".join("%s:%s\n" % (k, lower[k]) for k in signed)

    if not body:
        payload_hash = EMPTY_HASH
    elif "x-sdk-content-sha256" in lower:
        payload_hash = lower["x-sdk-content-sha256"]
    else:
        payload_hash = hashlib.sha256(body).hexdigest()

    cr = "\n".join([case["method"].upper(), canonical_uri(case["path"]), canonical_query(case["query"]),
                    canon_headers, ";".join(signed), payload_hash])
    sts = "\n".join(["SDK-HMAC-SHA256", date, hashlib.sha256(cr.encode("utf-8")).hexdigest()])
    sig = hmac.new(sk.encode("utf-8"), sts.encode("utf-8"), hashlib.sha256).hexdigest()
    auth = "SDK-HMAC-SHA256 Access=%s, SignedHeaders=%s, Signature=%s" % (ak, ";".join(signed), sig)
    return cr, sts, sig, auth


def main():
    cases = json.load(open(FIXTURE, encoding="utf-8"))
    failed = 0
    for c in cases:
        cr, sts, sig, auth = sign(c)
        ok = (cr == c["canonical_request"] and sts == c["string_to_sign"]
              and sig == c["signature"] and auth == c["output_headers"]["Authorization"])
        print("%-4s %s" % ("ok" if ok else "FAIL", c["name"]))
        if not ok:
            failed += 1
            print("  expected CR:\n" + c["canonical_request"] + "\n  got CR:\n" + cr)
    print("%d passed, %d failed" % (len(cases) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

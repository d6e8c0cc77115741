#!/usr/bin/env python3
"""List cloud phones with the official Huawei Cloud SDK against a custom endpoint.

Intended for pointing the real SDK at a local fake CPH server (e.g. the cphub
simulator) in tests:

    .venv/bin/python tools/huawei-sdk/client_example.py http://127.0.0.1:18080 \
        [--ak AK] [--sk SK] [--project-id PID] [--offset 0] [--limit 100] [--insecure]

Notes (huaweicloudsdkcore 3.1.219):
* ``with_endpoint(url)`` takes a full URL. A value that does not start with
  "http" gets "https://" prepended (client.py ClientBuilder.build), so plain
  ``http://127.0.0.1:PORT`` works as is and no TLS is involved.
* Do NOT call ``with_region(...)``: the region is what triggers endpoint lookup
  and, when the project id is missing, a call to IAM ``GET /v3/projects``.
  With only ``with_endpoint`` and a project id in BasicCredentials the SDK
  makes no other request than the one you ask for.
* The project id must be given: without it and without a region, the literal
  text "{project_id}" stays in the URL and no X-Project-Id header is sent.
* For an https endpoint with a self-signed certificate use
  ``HttpConfig.ignore_ssl_verification = True`` (``--insecure``) or
  ``HttpConfig.ssl_ca_cert = "/path/ca.pem"``.
* requests honours HTTP(S)_PROXY / NO_PROXY from the environment (the SDK
  passes ``proxies=None``); make sure loopback is not proxied.
"""

import argparse
import ipaddress
import os
import sys
from urllib.parse import urlparse

# Importing the SDK writes ~/.huaweicloud/application_id (used in the User-Agent);
# hide HOME during the import to keep the test machine clean.
_saved_home = os.environ.get("HOME")
os.environ["HOME"] = ""
try:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions import exceptions
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkcph.v1 import CphClient, ListCloudPhonesRequest
finally:
    if _saved_home is None:
        del os.environ["HOME"]
    else:
        os.environ["HOME"] = _saved_home


def _is_loopback(endpoint):
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_client(endpoint, ak, sk, project_id, insecure=False, timeout=(5, 10)):
    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = insecure
    config.timeout = timeout          # (connect, read) seconds
    config.retry_times = 0
    config.user_agent = "cphub-client-example"  # appended to "huaweicloud-usdk-python/3.0; "
    return CphClient.new_builder() \
        .with_http_config(config) \
        .with_credentials(BasicCredentials(ak, sk, project_id)) \
        .with_endpoint(endpoint) \
        .build()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("endpoint", help="e.g. http://127.0.0.1:18080")
    p.add_argument("--ak", default=os.environ.get("CPH_AK", "CPHUBTESTAK0000000001"))
    p.add_argument("--sk", default=os.environ.get("CPH_SK", "cphubTestSecretKey0123456789ABCDEFGHIJKLMNOP"))
    p.add_argument("--project-id", default=os.environ.get("CPH_PROJECT_ID", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"))
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback endpoint (off by default: this is a test tool)")
    args = p.parse_args(argv)

    if not args.allow_remote and not _is_loopback(args.endpoint):
        p.error("refusing non-loopback endpoint %r (use --allow-remote)" % args.endpoint)

    client = build_client(args.endpoint, args.ak, args.sk, args.project_id, args.insecure)
    try:
        resp = client.list_cloud_phones(ListCloudPhonesRequest(offset=args.offset, limit=args.limit))
    except exceptions.ClientRequestException as e:  # 4xx with Huawei error body
        print("HTTP %s error_code=%s error_msg=%s request_id=%s"
              % (e.status_code, e.error_code, e.error_msg, e.request_id), file=sys.stderr)
        return 1
    except exceptions.ServerResponseException as e:  # 5xx
        print("HTTP %s %s" % (e.status_code, e.error_msg), file=sys.stderr)
        return 1
    except exceptions.SdkException as e:  # connection refused, timeout, ...
        print("SDK error: %s" % e, file=sys.stderr)
        return 1

    print("status=%s request_id=%s count=%s" % (resp.status_code, resp.request_id, resp.count))
    for phone in resp.phones or []:
        print("%s\t%s\tstatus=%s\tserver=%s" % (phone.phone_id, phone.phone_name, phone.status, phone.server_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())

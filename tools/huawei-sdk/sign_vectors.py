#!/usr/bin/env python3
"""Generate AK/SK signing test vectors with the *official* Huawei Cloud Python SDK.

Run from the repository root:

    .venv/bin/python tools/huawei-sdk/sign_vectors.py

Writes tests/fixtures/sdk_signatures.json (a JSON list of cases).

Nothing here re-implements the signer: every case is produced by the SDK's
own code path.

* "client" cases go through CphClient exactly as ``client.<operation>(request)``
  would (``CphClient._<op>_http_info`` -> ``Client.build_future_request`` ->
  ``BasicCredentials.process_auth_request`` -> ``Signer.sign``), stopping right
  before the HTTP call. No network traffic happens.
* "signer" cases build an ``SdkRequest`` by hand and hand it to
  ``BasicCredentials.sign_request`` (which adds X-Project-Id and then calls
  ``Signer.sign``); they pin down edge cases of the algorithm.

The canonical request, string-to-sign and signature are captured by wrapping
(not replacing) ``Signer._process_canonical_request``,
``Signer._process_string_to_sign`` and ``Signer._sign_string_to_sign``.

Determinism: the X-Sdk-Date is fixed by passing it in as a request header
(``Client.preset_headers`` for client cases), which the SDK honours
(signer.py ``_process_header_time``); the User-Agent suffix is fixed through
``HttpConfig(user_agent=...)``. Running the script twice gives identical bytes.
"""

import copy
import hashlib
import json
import os
import sys
from importlib import metadata

# Importing huaweicloudsdkcore.auth.* imports huaweicloudsdkcore.http.user_agent,
# which creates ~/.huaweicloud/application_id (a random UUID) as a side effect and
# puts it in the default User-Agent. Hide HOME during the import so nothing is
# written and the default UA has no random part (we override the UA anyway).
_saved_home = os.environ.get("HOME")
os.environ["HOME"] = ""
try:
    import requests
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer import signer as sdk_signer
    from huaweicloudsdkcph.v1 import CphClient
    from huaweicloudsdkcph.v1 import model as cph
finally:
    if _saved_home is None:
        del os.environ["HOME"]
    else:
        os.environ["HOME"] = _saved_home

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_PATH = os.path.join(REPO_ROOT, "tests", "fixtures", "sdk_signatures.json")

# Fixed, obviously fake credentials.
AK = "CPHUBTESTAK0000000001"
SK = "cphubTestSecretKey0123456789ABCDEFGHIJKLMNOP"
PROJECT_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
SDK_DATE = "20240315T080910Z"
USER_AGENT_SUFFIX = "cphub-sdk-vectors/1"

REMOTE_ENDPOINT = "https://cph.cn-east-3.myhuaweicloud.com"
LOCAL_ENDPOINT = "http://127.0.0.1:18080"

PHONE_ID_1 = "1234567b8bab40ffb711234cb80d0234"
PHONE_ID_2 = "1678567b8bab40f93711234cb80d0764"
SERVER_ID = "88b8449b896f3a4f0ad57222dd91909a"
JOB_ID = "1564567b8bab40f34711234cb80d0123"
REQUEST_ID = "6837531fd3f54550927b930180a706bf"
IMAGE_ID = "1564567b8bab40f34711234cb80d8574"


# --------------------------------------------------------------------------
# Capture of intermediate values (wrapping the SDK's own methods).
# --------------------------------------------------------------------------
_captured = {}

_orig_canonical = sdk_signer.Signer._process_canonical_request
_orig_sts = sdk_signer.Signer._process_string_to_sign
_orig_sign = sdk_signer.Signer._sign_string_to_sign


def _wrap_canonical(self, request, signed_headers):
    out = _orig_canonical(self, request, signed_headers)
    _captured["canonical_request"] = out
    _captured["signed_headers"] = ";".join(signed_headers)
    return out


def _wrap_sts(self, canonical_request, time):
    out = _orig_sts(self, canonical_request, time)
    _captured["string_to_sign"] = out
    return out


def _wrap_sign(self, string_to_sign, key):
    out = _orig_sign(self, string_to_sign, key)
    _captured["signature"] = out
    return out


sdk_signer.Signer._process_canonical_request = _wrap_canonical
sdk_signer.Signer._process_string_to_sign = _wrap_sts
sdk_signer.Signer._sign_string_to_sign = _wrap_sign


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def _query_value_repr(v):
    """JSON representation of a query value as handed to the signer."""
    if isinstance(v, bool):
        return v  # keep JSON bool; the signer renders it as "true"/"false"
    if isinstance(v, (list, tuple)):
        return [_query_value_repr(x) for x in v]
    return str(v)


def _body_str(body):
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body.decode("utf-8")
    return body


def _wire_url(req):
    prepared = requests.Request(req.method, req.url).prepare()
    return prepared.url


def _case_from_signed(name, description, source, operation, path_template, method,
                      scheme, host, query_in, headers_in, body_in, signed_req):
    body = _body_str(body_in)
    case = {
        "name": name,
        "description": description,
        "source": source,
        "operation": operation,
        "credentials": {"ak": AK, "sk": SK, "project_id": PROJECT_ID},
        "method": method,
        "scheme": scheme,
        "host": host,
        "path_template": path_template,
        "path": signed_req.resource_path,
        "query": [[k, _query_value_repr(v)] for (k, v) in query_in],
        "input_headers": headers_in,
        "body": body,
        "body_sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
        "signed_headers": _captured["signed_headers"],
        "canonical_request": _captured["canonical_request"],
        "string_to_sign": _captured["string_to_sign"],
        "signature": _captured["signature"],
        "authorization": signed_req.header_params["Authorization"],
        "output_headers": dict(signed_req.header_params),
        "uri": signed_req.uri,
        "url": signed_req.url,
        "wire_url": _wire_url(signed_req),
    }
    return case


def make_client(endpoint, ignore_content_type_for_get=False):
    config = HttpConfig.get_default_config()
    config.user_agent = USER_AGENT_SUFFIX
    config.ignore_content_type_for_get_request = ignore_content_type_for_get
    client = CphClient.new_builder() \
        .with_http_config(config) \
        .with_credentials(BasicCredentials(AK, SK, PROJECT_ID)) \
        .with_endpoint(endpoint) \
        .build()
    # Fixed signing time: the signer uses an existing X-Sdk-Date header instead of utcnow().
    client.preset_headers = {"X-Sdk-Date": SDK_DATE}
    return client


def client_case(name, description, operation, op_snake, request, endpoint=REMOTE_ENDPOINT,
                ignore_content_type_for_get=False):
    client = make_client(endpoint, ignore_content_type_for_get)
    http_info = getattr(CphClient, "_%s_http_info" % op_snake)(request)
    _captured.clear()
    # Same call Client.do_http_request makes (client.py build_future_request).
    future = client.build_future_request(
        http_info["method"], http_info["resource_path"], http_info["path_params"],
        http_info["query_params"], http_info["header_params"], http_info["body"],
        http_info["post_params"], http_info["cname"], http_info["response_type"],
        http_info["collection_formats"], None)
    signed = future.result()
    client.get_http_client().close()
    client.get_http_client().executor.shutdown(wait=True)

    # Reconstruct the header set the signer received (everything the SDK added
    # before signing, i.e. the output minus what the signer/credentials add).
    added_by_signing = {"Authorization", "X-Project-Id", "Host"}
    headers_in = {k: v for k, v in signed.header_params.items() if k not in added_by_signing}
    query_in = [(k, v) for (k, v) in signed.query_params]
    return _case_from_signed(
        name, description, "CphClient.%s" % op_snake, operation, http_info["resource_path"],
        signed.method, signed.schema, signed.host, query_in, headers_in, signed.body, signed)


def signer_case(name, description, method, endpoint, path, query, headers, body):
    scheme, host = endpoint.split("://", 1)
    headers_in = dict(headers)
    # deep copies: the signer sorts list values in place and rewrites header values.
    req = SdkRequest(method=method, schema=scheme, host=host, resource_path=path,
                     query_params=copy.deepcopy(list(query)), header_params=dict(headers), body=body)
    _captured.clear()
    creds = BasicCredentials(AK, SK, PROJECT_ID)
    signed = creds.sign_request(req)
    return _case_from_signed(name, description, "BasicCredentials.sign_request", None, path,
                             method, scheme, host, query, headers_in, body, signed)


def prop(d):
    # property is a JSON *string* inside the JSON body; compact separators like the API docs.
    return json.dumps(d, separators=(",", ":"))


def build_cases():
    cases = []

    # ---- ListCloudPhones --------------------------------------------------
    cases.append(client_case(
        "list_phones_offset_limit",
        "GET list phones, offset=0&limit=100 (Content-Type application/json is set and signed even on GET)",
        "ListCloudPhones", "list_cloud_phones",
        cph.ListCloudPhonesRequest(offset=0, limit=100)))
    cases.append(client_case(
        "list_phones_status_server_filter",
        "GET list phones filtered by server_id and status; query keys get sorted in the canonical/wire query",
        "ListCloudPhones", "list_cloud_phones",
        cph.ListCloudPhonesRequest(offset=0, limit=100, server_id=SERVER_ID, status=2)))
    cases.append(client_case(
        "list_phones_name_needs_encoding",
        "GET list phones with phone_name containing a space and '/', encoded %20 and %2F",
        "ListCloudPhones", "list_cloud_phones",
        cph.ListCloudPhonesRequest(offset=0, limit=10, phone_name="my phone/01")))
    cases.append(client_case(
        "list_phones_name_special_chars",
        "GET list phones with phone_name full of reserved / non-ASCII characters: only A-Za-z0-9-_.~ stay literal",
        "ListCloudPhones", "list_cloud_phones",
        cph.ListCloudPhonesRequest(offset=20, limit=50, phone_name="a+b=c&d~e_f.g-h*i(j)k'l!m:n@o,p;q?r#s%t\u624b\u673a",
                                   type=0)))
    cases.append(client_case(
        "list_phones_no_query",
        "GET list phones without any query parameter (empty canonical query line)",
        "ListCloudPhones", "list_cloud_phones",
        cph.ListCloudPhonesRequest()))
    cases.append(client_case(
        "list_phones_local_endpoint",
        "GET list phones against http://127.0.0.1:18080: Host header (and canonical host) includes the port",
        "ListCloudPhones", "list_cloud_phones",
        cph.ListCloudPhonesRequest(offset=0, limit=100), endpoint=LOCAL_ENDPOINT))
    cases.append(client_case(
        "list_phones_ignore_content_type_for_get",
        "GET list phones with HttpConfig.ignore_content_type_for_get_request=True: no Content-Type header, not signed",
        "ListCloudPhones", "list_cloud_phones",
        cph.ListCloudPhonesRequest(offset=0, limit=100), ignore_content_type_for_get=True))

    # ---- ShowCloudPhoneDetail ---------------------------------------------
    cases.append(client_case(
        "show_phone_detail",
        "GET phone detail; canonical URI gets a trailing '/', the wire path does not",
        "ShowCloudPhoneDetail", "show_cloud_phone_detail",
        cph.ShowCloudPhoneDetailRequest(phone_id=PHONE_ID_1)))

    # ---- UpdateCloudPhoneProperty -----------------------------------------
    cases.append(client_case(
        "update_phone_property",
        "POST batch-update-property with JSON body; property is a JSON string",
        "UpdateCloudPhoneProperty", "update_cloud_phone_property",
        cph.UpdateCloudPhonePropertyRequest(body=cph.UpdateCloudPhonePropertyRequestBody(phones=[
            cph.PropertyToUpdate(phone_id=PHONE_ID_1, _property=prop({
                "sys.prop.writephonenumber": "13666666666",
                "sys.prop.writeimsi": "460021624617113",
                "sys.prop.writewifissid": "test_wifi"})),
            cph.PropertyToUpdate(phone_id=PHONE_ID_2, _property=prop({"com.cph.mainkeys": 1})),
        ]))))

    # ---- RestartCloudPhone ------------------------------------------------
    cases.append(client_case(
        "restart_phones",
        "POST batch-restart with two phones",
        "RestartCloudPhone", "restart_cloud_phone",
        cph.RestartCloudPhoneRequest(body=cph.RestartCloudPhoneRequestBody(phones=[
            cph.PhoneProperty(phone_id=PHONE_ID_1),
            cph.PhoneProperty(phone_id=PHONE_ID_2),
        ]))))
    cases.append(client_case(
        "restart_phones_with_image_and_property",
        "POST batch-restart with image_id and a property string (image_id serialised first: model attribute order)",
        "RestartCloudPhone", "restart_cloud_phone",
        cph.RestartCloudPhoneRequest(body=cph.RestartCloudPhoneRequestBody(
            image_id=IMAGE_ID,
            phones=[cph.PhoneProperty(phone_id=PHONE_ID_1, _property=prop({"ro.horizontal.screen": "1"}))]))))

    # ---- ResetCloudPhone --------------------------------------------------
    cases.append(client_case(
        "reset_phones",
        "POST batch-reset",
        "ResetCloudPhone", "reset_cloud_phone",
        cph.ResetCloudPhoneRequest(body=cph.ResetCloudPhoneRequestBody(phones=[
            cph.ResetPhoneProperty(phone_id=PHONE_ID_1),
            cph.ResetPhoneProperty(phone_id=PHONE_ID_2, _property=prop({"sys.prop.writeimsi": "460021624617113"})),
        ]))))

    # ---- StopCloudPhone ---------------------------------------------------
    cases.append(client_case(
        "stop_phones",
        "POST batch-stop",
        "StopCloudPhone", "stop_cloud_phone",
        cph.StopCloudPhoneRequest(body=cph.StopCloudPhoneRequestBody(phone_ids=[PHONE_ID_1, PHONE_ID_2]))))

    # ---- ShowJob / ListJobs -----------------------------------------------
    cases.append(client_case(
        "show_job",
        "GET job detail",
        "ShowJob", "show_job",
        cph.ShowJobRequest(job_id=JOB_ID)))
    cases.append(client_case(
        "list_jobs_by_request_id",
        "GET jobs by request_id",
        "ListJobs", "list_jobs",
        cph.ListJobsRequest(request_id=REQUEST_ID)))
    cases.append(client_case(
        "list_jobs_by_request_id_paged",
        "GET jobs by request_id with offset/limit (sorted: limit, offset, request_id)",
        "ListJobs", "list_jobs",
        cph.ListJobsRequest(request_id=REQUEST_ID, offset=0, limit=100)))

    # ---- POST with empty bodies -------------------------------------------
    cases.append(client_case(
        "post_empty_body_none",
        "POST batch-restart with no body at all (body None -> empty payload hash e3b0c442...)",
        "RestartCloudPhone", "restart_cloud_phone",
        cph.RestartCloudPhoneRequest()))
    cases.append(client_case(
        "post_empty_model_body",
        "POST batch-stop with an empty body model: the SDK serialises it as the 2-byte body '{}'",
        "StopCloudPhone", "stop_cloud_phone",
        cph.StopCloudPhoneRequest(body=cph.StopCloudPhoneRequestBody())))

    # ---- Raw signer edge cases --------------------------------------------
    base_headers = {"Content-Type": "application/json", "X-Sdk-Date": SDK_DATE}
    cases.append(signer_case(
        "signer_post_empty_string_body",
        "POST with body '' : empty payload hash, no Content-Length in signed headers",
        "POST", REMOTE_ENDPOINT, "/v1/%s/cloud-phone/phones/batch-stop" % PROJECT_ID, [],
        dict(base_headers), ""))
    cases.append(signer_case(
        "signer_path_with_trailing_slash",
        "resource path already ending in '/': canonical URI is not doubled",
        "GET", REMOTE_ENDPOINT, "/v1/%s/cloud-phone/phones/" % PROJECT_ID, [],
        dict(base_headers), None))
    cases.append(signer_case(
        "signer_query_sorting_and_lists",
        "unsorted keys, repeated key, list value (sorted and expanded), bool value (lower-cased), empty value",
        "GET", REMOTE_ENDPOINT, "/v1/%s/cloud-phone/phones" % PROJECT_ID,
        [("zeta", "last"), ("Alpha", "upper sorts before lower"), ("dup", "b"), ("dup", "a"),
         ("multi", ["y", "x"]), ("flag", True), ("empty", "")],
        dict(base_headers), None))
    cases.append(signer_case(
        "signer_header_rules",
        "mixed-case header names are lower-cased, values trimmed (inner spaces kept), headers containing '_' are sent but NOT signed",
        "GET", REMOTE_ENDPOINT, "/v1/%s/cloud-phone/jobs/%s" % (PROJECT_ID, JOB_ID), [],
        {"Content-Type": "application/json", "X-Sdk-Date": SDK_DATE, "X-Custom-Header": "  a  b  ",
         "x_underscore_header": "skipped", "User-Agent": "cphub/0.1"}, None))
    cases.append(signer_case(
        "signer_explicit_host_header",
        "a caller-supplied Host header (any case) wins over the request host",
        "GET", LOCAL_ENDPOINT, "/v1/%s/cloud-phone/phones" % PROJECT_ID, [("limit", "1")],
        {"Content-Type": "application/json", "X-Sdk-Date": SDK_DATE, "host": "cph.example.test"}, None))
    cases.append(signer_case(
        "signer_path_needs_encoding",
        "path segment with space / non-ASCII / ':' : canonical URI unquotes then re-quotes each segment (safe='~')",
        "GET", REMOTE_ENDPOINT, "/v1/%s/cloud-phone/phones/a b:c\u00e9%%2Fd" % PROJECT_ID, [],
        dict(base_headers), None))
    cases.append(signer_case(
        "signer_non_json_content_type",
        "non-JSON Content-Type: SDK adds X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD (signed) and uses it as payload hash",
        "POST", REMOTE_ENDPOINT, "/v1/%s/cloud-phone/phones/commands" % PROJECT_ID, [],
        {"Content-Type": "text/plain", "X-Sdk-Date": SDK_DATE}, "hello"))
    return cases


def main():
    cases = build_cases()
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w", encoding="utf-8", newline="\n") as f:
        json.dump(cases, f, indent=2, ensure_ascii=False)
        f.write("\n")
    versions = {p: metadata.version(p) for p in ("huaweicloudsdkcore", "huaweicloudsdkcph")}
    print("wrote %d cases to %s (SDK %s)" % (len(cases), os.path.relpath(OUT_PATH, REPO_ROOT), versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Drive cphub's fake CPH management API with Huawei's *official* Python SDK.

An independent client for the simulator: if the SDK's own signer, paths, bodies and
response models work against the fake, the fake speaks the real wire format.

    .venv/bin/python tools/huawei-sdk/sdk_against_simulator.py \\
        --endpoint http://127.0.0.1:PORT --ak AK --sk SK --project-id PID --phone-id ID

Calls, in order: ListCloudPhones, ShowCloudPhoneDetail, then UpdateCloudPhoneProperty,
RestartCloudPhone and ResetCloudPhone (with a property), each followed by ShowJob polls until
its job ends, ListJobs for the reset's request, and ShowCloudPhoneDetail again (the reset's
property must be all the phone has). One JSON line per call on stdout (one per job for the
polls): ``{"call": NAME, "ok": true|false, "status_code": N, "response": {...}}``, the
response under its JSON field names; a refused call has ``error_code``/``error_msg`` instead.
Exit status 0 only if every call succeeded and every job ended with status 2.

``--encode-server-id ID --command TEXT`` calls instead ListEncodeServers (4.6.1, the server
must be listed), RestartEncodeServer (4.6.2) and ShowJob polls until its job ends, then
RunSyncCommand (4.7.5) with TEXT on the phone, whose job must report status 2.

``--expect-auth-failure`` (use with a wrong SK): only the first call is made, and the exit
status is 0 only if it was refused with HTTP 401.

Requires huaweicloudsdkcore and huaweicloudsdkcph 3.1.219 (tools/huawei-sdk/requirements.txt).
The client is built with ``with_endpoint`` only, never ``with_region``: a region makes the SDK
look up endpoints and project ids at IAM, which the simulator is not.
"""

import argparse
import ipaddress
import json
import os
import sys
import time
from urllib.parse import urlparse

# Importing huaweicloudsdkcore writes ~/.huaweicloud/application_id (a random UUID for the
# User-Agent). Hide HOME during the import so a test run leaves nothing behind.
_saved_home = os.environ.get("HOME")
os.environ["HOME"] = ""
try:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions import exceptions
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization
    from huaweicloudsdkcph.v1 import (
        CphClient,
        ListCloudPhonesRequest,
        ListEncodeServersRequest,
        ListJobsRequest,
        PhoneProperty,
        PropertyToUpdate,
        ResetCloudPhoneRequest,
        ResetCloudPhoneRequestBody,
        ResetPhoneProperty,
        RestartCloudPhoneRequest,
        RestartCloudPhoneRequestBody,
        RestartEncodeServerRequest,
        RestartEncodeServerRequestBody,
        RunSyncCommandRequest,
        RunSyncCommandRequestBody,
        ShowCloudPhoneDetailRequest,
        ShowJobRequest,
        UpdateCloudPhonePropertyRequest,
        UpdateCloudPhonePropertyRequestBody,
    )
finally:
    if _saved_home is None:
        del os.environ["HOME"]
    else:
        os.environ["HOME"] = _saved_home

JOB_RUNNING = 1
JOB_SUCCEEDED = 2


class CallFailed(Exception):
    """A call was refused or could not be made; already reported on stdout."""


def wire(model):
    """A response model as the fields it parsed, under their JSON names (unset ones left out)."""
    return sanitize_for_serialization(model)


def report(call, ok, **fields):
    print(json.dumps(dict(call=call, ok=ok, **fields), sort_keys=True), flush=True)


def call(name, fn, request, quiet=False):
    """One SDK call, reported as a JSON line (a success not, if quiet); raises CallFailed if
    it did not succeed."""
    try:
        response = fn(request)
    except exceptions.ServiceResponseException as e:  # 4xx/5xx with an error body
        report(name, False, status_code=e.status_code, error_code=e.error_code,
               error_msg=e.error_msg, request_id=e.request_id)
        raise CallFailed(name) from e
    except exceptions.SdkException as e:  # connection refused, timeout, ...
        report(name, False, error=str(e))
        raise CallFailed(name) from e
    if not quiet:
        report(name, True, status_code=response.status_code, response=wire(response))
    return response


def build_client(endpoint, ak, sk, project_id, timeout):
    config = HttpConfig.get_default_config()
    config.timeout = (timeout, timeout)
    config.retry_times = 0
    config.user_agent = "cphub-sdk-against-simulator"
    return CphClient.new_builder() \
        .with_http_config(config) \
        .with_credentials(BasicCredentials(ak, sk, project_id)) \
        .with_endpoint(endpoint) \
        .build()


def single_job(name, response):
    """The job id of a one-phone batch answer; a per-phone error counts as a failure."""
    jobs = response.jobs or []
    if len(jobs) != 1 or not jobs[0].job_id or jobs[0].error_code:
        report(name + ".jobs", False, jobs=wire(jobs))
        raise CallFailed(name)
    return jobs[0].job_id


def wait_for_job(client, job_id, deadline_secs, poll_secs=0.05):
    """Polls ShowJob until the job ends; reports only the final answer (and how many polls)."""
    started = time.monotonic()
    polls = 0
    while True:
        polls += 1
        response = call("ShowJob", client.show_job, ShowJobRequest(job_id=job_id), quiet=True)
        if response.status != JOB_RUNNING or time.monotonic() - started > deadline_secs:
            break
        time.sleep(poll_secs)
    ok = response.status == JOB_SUCCEEDED
    report("ShowJob", ok, status_code=response.status_code, polls=polls, response=wire(response))
    if not ok:
        raise CallFailed("ShowJob")
    return response


def parse_properties(pairs):
    properties = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError("--property wants KEY=VALUE, got %r" % pair)
        properties[key] = value
    return properties


def run_all(client, args):
    update = parse_properties(args.property or ["sys.prop.writewifissid=cphub_sdk_check"])
    reset = parse_properties(args.reset_property or ["com.cph.cg.heartbeat_interval=30"])
    phone = args.phone_id

    listed = call("ListCloudPhones", client.list_cloud_phones,
                  ListCloudPhonesRequest(offset=0, limit=args.limit))
    if not any(p.phone_id == phone for p in listed.phones or []) and listed.count <= args.limit:
        report("ListCloudPhones.contains", False, phone_id=phone)
        raise CallFailed("ListCloudPhones")
    call("ShowCloudPhoneDetail", client.show_cloud_phone_detail,
         ShowCloudPhoneDetailRequest(phone_id=phone))

    body = UpdateCloudPhonePropertyRequestBody(
        phones=[PropertyToUpdate(phone_id=phone, _property=json.dumps(update))])
    answer = call("UpdateCloudPhoneProperty", client.update_cloud_phone_property,
                  UpdateCloudPhonePropertyRequest(body=body))
    wait_for_job(client, single_job("UpdateCloudPhoneProperty", answer), args.job_deadline)

    body = RestartCloudPhoneRequestBody(phones=[PhoneProperty(phone_id=phone)])
    answer = call("RestartCloudPhone", client.restart_cloud_phone,
                  RestartCloudPhoneRequest(body=body))
    wait_for_job(client, single_job("RestartCloudPhone", answer), args.job_deadline)

    body = ResetCloudPhoneRequestBody(
        phones=[ResetPhoneProperty(phone_id=phone, _property=json.dumps(reset))])
    answer = call("ResetCloudPhone", client.reset_cloud_phone, ResetCloudPhoneRequest(body=body))
    wait_for_job(client, single_job("ResetCloudPhone", answer), args.job_deadline)

    jobs = call("ListJobs", client.list_jobs, ListJobsRequest(request_id=answer.request_id))
    if [j.phone_id for j in jobs.jobs or []] != [phone]:
        report("ListJobs.phones", False, phones=[j.phone_id for j in jobs.jobs or []])
        raise CallFailed("ListJobs")

    detail = call("ShowCloudPhoneDetail", client.show_cloud_phone_detail,
                  ShowCloudPhoneDetailRequest(phone_id=phone))
    if json.loads(detail._property or "{}") != reset:
        report("ShowCloudPhoneDetail.property", False, expected=reset, got=detail._property)
        raise CallFailed("ShowCloudPhoneDetail")


def run_encode_and_command(client, args):
    listed = call("ListEncodeServers", client.list_encode_servers,
                  ListEncodeServersRequest(offset=0, limit=100))
    if not any(e.encode_server_id == args.encode_server_id for e in listed.encode_servers or []):
        report("ListEncodeServers.contains", False, encode_server_id=args.encode_server_id)
        raise CallFailed("ListEncodeServers")

    body = RestartEncodeServerRequestBody(encode_server_ids=[args.encode_server_id])
    answer = call("RestartEncodeServer", client.restart_encode_server,
                  RestartEncodeServerRequest(body=body))
    wait_for_job(client, single_job("RestartEncodeServer", answer), args.job_deadline)

    body = RunSyncCommandRequestBody(command="shell", content=args.command,
                                     phone_ids=[args.phone_id])
    answer = call("RunSyncCommand", client.run_sync_command, RunSyncCommandRequest(body=body))
    jobs = answer.jobs or []
    if len(jobs) != 1 or jobs[0].status != JOB_SUCCEEDED:
        report("RunSyncCommand.jobs", False, jobs=wire(jobs))
        raise CallFailed("RunSyncCommand")


def expect_refusal(client, args):
    try:
        call("ListCloudPhones", client.list_cloud_phones,
             ListCloudPhonesRequest(offset=0, limit=args.limit))
    except CallFailed as e:
        refused = getattr(e.__cause__, "status_code", None) == 401
        report("expect-auth-failure", refused)
        return 0 if refused else 1
    report("expect-auth-failure", False, error="the call was accepted")
    return 1


def is_loopback(endpoint):
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:18080")
    p.add_argument("--ak", required=True)
    p.add_argument("--sk", required=True)
    p.add_argument("--project-id", required=True)
    p.add_argument("--phone-id", help="the phone to act on (required unless --expect-auth-failure)")
    p.add_argument("--property", action="append", metavar="KEY=VALUE",
                   help="property to set with UpdateCloudPhoneProperty (repeatable)")
    p.add_argument("--reset-property", action="append", metavar="KEY=VALUE",
                   help="property to pass to ResetCloudPhone (repeatable)")
    p.add_argument("--encode-server-id",
                   help="with --command: run the encoding server and sync command calls")
    p.add_argument("--command", help="the ADB shell command for RunSyncCommand")
    p.add_argument("--limit", type=int, default=100, help="ListCloudPhones page size")
    p.add_argument("--job-deadline", type=float, default=30.0, help="seconds to wait per job")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")
    p.add_argument("--expect-auth-failure", action="store_true",
                   help="succeed only if the first call is refused with 401")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback endpoint (off by default: this is a test tool)")
    args = p.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.endpoint):
        p.error("refusing non-loopback endpoint %r (use --allow-remote)" % args.endpoint)
    if not args.expect_auth_failure and not args.phone_id:
        p.error("--phone-id is required")
    if is_loopback(args.endpoint):
        # requests honours *_PROXY; the simulator is local and must be reached directly.
        host = urlparse(args.endpoint).hostname
        for name in ("NO_PROXY", "no_proxy"):
            os.environ[name] = ",".join(filter(None, [os.environ.get(name), host]))

    client = build_client(args.endpoint, args.ak, args.sk, args.project_id, args.timeout)
    if args.expect_auth_failure:
        return expect_refusal(client, args)
    try:
        if args.encode_server_id:
            run_encode_and_command(client, args)
        else:
            run_all(client, args)
    except CallFailed:
        return 1
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Validates cphub's deployment monitoring artifacts. Standard library only.

    python3 deploy/check.py [--no-pyyaml] [--no-promtool | --require-promtool]

Checks deploy/grafana/cphub.json, deploy/prometheus/prometheus.yml,
deploy/prometheus/alerts.yml, deploy/systemd/cphub.service (required hardening, and
`systemd-analyze verify` when installed) and deploy/kubernetes/cphub.yaml (probes, ports,
the database URL from a Secret): structure, panel ids and layout, and that every metric, label
and label value they use is one cphub exports (KNOWN_METRICS below). The YAML files are read
with PyYAML when it is importable, else with the small parser in this file (enough for the
subset these files use). When promtool is on PATH it also runs `promtool check config`,
`promtool check rules`, `promtool test rules` and parses every dashboard query.

Prints "deploy artifacts: N checks passed" and exits 0, or lists the problems and exits 1.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

DEPLOY = os.path.dirname(os.path.abspath(__file__))
DASHBOARD = os.path.join(DEPLOY, "grafana", "cphub.json")
METRICS_SOURCE = os.path.join(DEPLOY, os.pardir, "src", "metrics")
PROM_CONFIG = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
ALERTS = os.path.join(DEPLOY, "prometheus", "alerts.yml")
ALERT_TESTS = os.path.join(DEPLOY, "prometheus", "alerts_test.yml")
SYSTEMD_UNIT = os.path.join(DEPLOY, "systemd", "cphub.service")
KUBERNETES = os.path.join(DEPLOY, "kubernetes", "cphub.yaml")
BINARY = "/usr/local/bin/cphub"

# What the systemd unit must hold (docs/operations.md, deploy files): key -> required value,
# or None for "present with any value".
UNIT_REQUIRED = {
    ("Service", "ExecStart"): f"{BINARY} serve",
    ("Service", "DynamicUser"): "yes",
    ("Service", "StateDirectory"): "cphub",
    ("Service", "ProtectSystem"): "strict",
    ("Service", "ProtectHome"): "yes",
    ("Service", "NoNewPrivileges"): "yes",
    ("Service", "PrivateTmp"): "yes",
    ("Service", "CapabilityBoundingSet"): "",
    ("Service", "EnvironmentFile"): None,
    ("Install", "WantedBy"): "multi-user.target",
}
# The probes as docs/operations.md names them.
PROBES = {"livenessProbe": "/livez", "readinessProbe": "/readyz"}

# What cphub exports: docs/metrics.md and src/metrics/mod.rs. Keep in step with both.
# name -> (type, labels). Histograms add _bucket (with le), _count and _sum.
KNOWN_METRICS = {
    "cphub_sessions_active": ("gauge", {"app_id"}),
    "cphub_sessions_started_total": ("counter", {"app_id"}),
    "cphub_enter_app_mismatches_total": ("counter", set()),
    "cphub_enter_phone_mismatches_total": ("counter", set()),
    "cphub_sessions_ended_total": ("counter", {"app_id", "reason"}),
    "cphub_session_duration_seconds": ("histogram", {"app_id"}),
    "cphub_run_time_mismatches_total": ("counter", set()),
    "cphub_sign_checks_total": ("counter", {"result"}),
    "cphub_sign_check_decrypt_total": ("counter", {"result"}),
    "cphub_event_fields_truncated_total": ("counter", {"field"}),
    "cphub_events_total": ("counter", {"type", "outcome"}),
    "cphub_heartbeats_total": ("counter", set()),
    "cphub_heartbeats_written_total": ("counter", set()),
    "cphub_heartbeats_held_back": ("gauge", set()),
    "cphub_heartbeat_flush_seconds": ("histogram", set()),
    "cphub_heartbeat_flush_failures_total": ("counter", set()),
    "cphub_callbacks_refused_total": ("counter", set()),
    "cphub_write_queue_jobs": ("gauge", {"writer"}),
    "cphub_write_queue_dropped_total": ("counter", {"writer", "reason"}),
    "cphub_write_rounds_total": ("counter", {"kinds"}),
    "cphub_write_rounds_raced_total": ("counter", set()),
    "cphub_phones": ("gauge", {"state"}),
    "cphub_rollout_phones": ("gauge", {"state"}),
    "cphub_encode_servers": ("gauge", {"state"}),
    "cphub_queue_length": ("gauge", {"app_id"}),
    "cphub_queue_wait_seconds": ("histogram", set()),
    "cphub_queue_expired_total": ("counter", set()),
    "cphub_recoveries_total": ("counter", {"action", "result"}),
    "cphub_cph_account_blocked": ("gauge", set()),
    "cphub_server_incidents_total": ("counter", set()),
    "cphub_server_incidents_open": ("gauge", set()),
    "cphub_watchdog_leader": ("gauge", set()),
    "cphub_book_sessions_removed_total": ("counter", set()),
    "cphub_book_retention_leader": ("gauge", set()),
    "cphub_webhook_deliveries_total": ("counter", {"endpoint", "result"}),
    "cphub_webhook_attempts_total": ("counter", {"endpoint"}),
    "cphub_webhook_oldest_undelivered_seconds": ("gauge", {"endpoint"}),
    "cphub_webhook_failures_in_a_row": ("gauge", {"endpoint"}),
    "cphub_cph_requests_total": ("counter", {"operation", "status"}),
    "cphub_cph_request_duration_seconds": ("histogram", {"operation"}),
    "cphub_http_requests_total": ("counter", {"method", "route", "status"}),
    "cphub_http_request_duration_seconds": ("histogram", {"method", "route"}),
    "cphub_build_info": ("gauge", {"version", "git_sha"}),
}

# The error codes of docs/errors.md, as the sign-check label carries them
# (CPHUB. prefix dropped, lowercased).
REFUSALS = {
    "malformed_json", "invalid_field", "invalid_time", "unknown_event_type", "unknown_status",
    "payload_too_large", "unauthorized", "not_found", "method_not_allowed", "unknown_session",
    "bad_ticket", "bad_auth_ts", "ticket_expired", "encrypted_data_required", "decrypt_failed",
    "ticket_replayed", "ticket_session_ended", "phone_busy", "no_free_phone", "unavailable",
    "internal", "source_refused",
}

# Closed label value sets; a matcher with a literal value (or a|b|c) must stay inside them.
# A value may also be a pattern (compiled regex, full match).
KNOWN_VALUES = {
    ("cphub_phones", "state"): {
        # "recovering" and "broken" come with the fleet watchdog; "unavailable" is a
        # control-plane status in transition or failed, "out_of_service" frozen, stopped,
        # creation or stopping failed (docs/operations.md, the phone status table);
        # "draining" a phone a rollout took from allocation, "unlisted" one the control
        # plane no longer lists.
        "idle", "allocated", "occupied", "stale", "unavailable", "out_of_service",
        "recovering", "broken", "draining", "unlisted",
    },
    # Chapter 4.6.1's statuses as cphub names them (src/domain/encode_server.rs).
    ("cphub_encode_servers", "state"): {
        "running", "abnormal", "restarting", "frozen", "stopped", "creating", "unknown",
    },
    ("cphub_sign_checks_total", "result"): {"ok", "retry", "reconnect"} | REFUSALS,
    ("cphub_sign_check_decrypt_total", "result"): {"ok", "failed", "absent"},
    ("cphub_event_fields_truncated_total", "field"): {"error_msg"},
    ("cphub_events_total", "type"): {"enter", "quit", "unknown"},
    # The kinds of write the group-commit writers take (src/store/writers.rs), why one is
    # dropped, and how many kinds a round's transaction carried.
    ("cphub_write_queue_jobs", "writer"): {"events", "sign_checks", "mints"},
    ("cphub_write_queue_dropped_total", "writer"): {"events", "sign_checks", "mints"},
    ("cphub_write_queue_dropped_total", "reason"): {"requester_gone", "queued_too_long"},
    ("cphub_write_rounds_total", "kinds"): {"1", "2", "3"},
    ("cphub_events_total", "outcome"): {"accepted", "duplicate", "conflict", "ignored", "rejected"},
    # mark_broken: the watchdog giving up on a phone (hourly cap reached).
    ("cphub_recoveries_total", "action"): {"restart", "reset", "mark_broken"},
    ("cphub_recoveries_total", "result"): {"succeeded", "failed", "dry_run", "error", "skipped"},
    ("cphub_webhook_deliveries_total", "result"): {"delivered", "retried", "failed"},
    ("cphub_cph_requests_total", "status"): {
        re.compile(r"[1-5][0-9][0-9]"), "timeout", "unreachable", "circuit_open", "error",
    },
    ("cphub_http_requests_total", "status"): {re.compile(r"[1-5][0-9][0-9]")},
}

# Labels every scraped series carries besides its own.
TARGET_LABELS = {"job", "instance"}

REQUIRED_ALERTS = {
    "CphubDown", "HeartbeatsStopped", "StalePhones", "StalePhonesRatio", "BrokenPhones",
    "RecoveryFailures", "SignCheckRefusalRatio", "CphApiErrors", "CphApiCircuitOpen",
}
SEVERITIES = {"critical", "warning", "info"}
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row"}
GRID_WIDTH = 24
# Grafana's built-in variables, usable in queries without a template definition.
BUILTIN_VARS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                "__range_ms", "__dashboard", "__from", "__to"}

METRIC_RE = re.compile(r"\bcphub_[a-z_]+")
SELECTOR_RE = re.compile(r"\b(cphub_[a-z_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def base_metric(name):
    """cphub_x_bucket -> cphub_x (for histograms); other names unchanged."""
    for suffix in ("_bucket", "_count", "_sum"):
        stem = name[: -len(suffix)]
        if name.endswith(suffix) and KNOWN_METRICS.get(stem, ("",))[0] == "histogram":
            return stem
    return name


# --------------------------------------------------------------------------------------------
# A small YAML reader for the subset used here: block mappings and sequences, comments,
# plain/single/double-quoted scalars, block scalars (| |- > >-), one-line flow [..] and {..}.


class YamlError(Exception):
    pass


KEY_RE = re.compile(r"""^((?:'[^']*')|(?:"(?:[^"\\]|\\.)*")|(?:[^'"\s#\-\[\]{}][^:#]*?)|(?:-[^\s:][^:#]*?))\s*:(?:\s+|$)(.*)$""")


class MiniYaml:
    def __init__(self, text):
        self.lines = text.split("\n")
        self.i = 0

    def fail(self, message):
        raise YamlError(f"line {self.i + 1}: {message}")

    def skip(self):
        while self.i < len(self.lines):
            stripped = self.lines[self.i].strip()
            if stripped == "" or stripped.startswith("#"):
                self.i += 1
            else:
                return

    def indent(self):
        """Indent of the next content line, -1 at the end."""
        self.skip()
        if self.i >= len(self.lines):
            return -1
        line = self.lines[self.i]
        if "\t" in line[: len(line) - len(line.lstrip())]:
            self.fail("tab in indentation")
        return len(line) - len(line.lstrip(" "))

    def content(self):
        return self.lines[self.i].strip()

    def parse(self):
        if self.indent() < 0:
            return None
        value = self.block(self.indent())
        if self.indent() >= 0:
            self.fail("content after the document")
        return value

    def block(self, indent):
        if self.is_seq_item(self.content()):
            return self.sequence(indent)
        return self.mapping(indent)

    @staticmethod
    def is_seq_item(content):
        return content == "-" or content.startswith("- ")

    def sequence(self, indent):
        items = []
        while self.indent() == indent and self.is_seq_item(self.content()):
            line = self.lines[self.i]
            rest = line[indent + 1:]
            if rest.strip() == "" or rest.strip().startswith("#"):
                self.i += 1
                child = self.indent()
                items.append(self.block(child) if child > indent else None)
                continue
            column = indent + 1 + len(rest) - len(rest.lstrip(" "))
            rest = rest.strip()
            if KEY_RE.match(rest) and not rest.startswith(("[", "{")):
                # "- key: value": a mapping whose first key sits after the dash.
                self.lines[self.i] = " " * column + rest
                items.append(self.mapping(column))
            elif self.is_seq_item(rest):
                self.lines[self.i] = " " * column + rest
                items.append(self.sequence(column))
            else:
                self.i += 1
                items.append(self.value(rest, indent))
        if self.indent() > indent:
            self.fail("unexpected indentation")
        return items

    def mapping(self, indent):
        result = {}
        while self.indent() == indent and not self.is_seq_item(self.content()):
            match = KEY_RE.match(self.content())
            if not match:
                self.fail(f"expected 'key: value', got {self.content()!r}")
            key = self.scalar(match.group(1).strip())
            if key in result:
                self.fail(f"duplicate key {key!r}")
            rest = match.group(2)
            self.i += 1
            if rest.strip() == "" or rest.lstrip().startswith("#"):
                child = self.indent()
                if child > indent:
                    result[key] = self.block(child)
                elif child == indent and self.is_seq_item(self.content()):
                    result[key] = self.sequence(indent)
                else:
                    result[key] = None
            else:
                result[key] = self.value(rest, indent)
        if self.indent() > indent:
            self.fail("unexpected indentation")
        return result

    def value(self, text, indent):
        """A value that starts on the current key's (already consumed) line."""
        text = text.strip()
        if text[:1] in ("|", ">"):
            return self.block_scalar(text, indent)
        if text[:1] in ("[", "{"):
            value, rest = self.flow(text, 0)
            if strip_comment(rest).strip():
                self.fail(f"trailing text after flow collection: {rest!r}")
            return value
        value, rest = self.quoted_or_plain(text)
        if strip_comment(rest).strip():
            self.fail(f"trailing text after scalar: {rest!r}")
        return value

    def quoted_or_plain(self, text):
        if text.startswith("'"):
            match = re.match(r"'((?:[^']|'')*)'", text)
            if not match:
                self.fail("unterminated single-quoted scalar")
            return match.group(1).replace("''", "'"), text[match.end():]
        if text.startswith('"'):
            match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
            if not match:
                self.fail("unterminated double-quoted scalar")
            return json.loads('"' + match.group(1) + '"'), text[match.end():]
        return self.scalar(strip_comment(text).strip()), ""

    def scalar(self, text):
        if text.startswith(("'", '"')):
            return self.quoted_or_plain(text)[0]
        if text in ("", "~", "null", "Null", "NULL"):
            return None
        if text in ("true", "True", "TRUE"):
            return True
        if text in ("false", "False", "FALSE"):
            return False
        if re.fullmatch(r"[-+]?[0-9]+", text):
            return int(text)
        if re.fullmatch(r"[-+]?([0-9]*\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?", text):
            return float(text)
        if text.startswith(("&", "*", "!", "%", "@", "`")):
            self.fail(f"unsupported YAML syntax: {text!r}")
        return text

    def flow(self, text, pos):
        """Parses a one-line [..] or {..} at text[pos]; returns (value, rest after it)."""
        opening = text[pos]
        closing = "]" if opening == "[" else "}"
        items = [] if opening == "[" else {}
        pos += 1
        while True:
            while pos < len(text) and text[pos] == " ":
                pos += 1
            if pos >= len(text):
                self.fail("unterminated flow collection")
            if text[pos] == closing:
                return items, text[pos + 1:]
            if text[pos] in "[{":
                item, rest = self.flow(text, pos)
                pos = len(text) - len(rest)
                key = None
            else:
                match = re.match(r"""('(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^,\]\}:]*(?::(?!\s)[^,\]\}:]*)*)""", text[pos:])
                token = match.group(1)
                pos += match.end()
                item = self.scalar(token.strip())
                key = None
                if opening == "{":
                    if not text[pos:].startswith(":"):
                        self.fail("expected ':' in flow mapping")
                    pos += 1
                    key = item
                    while text[pos] == " ":
                        pos += 1
                    if text[pos] in "[{":
                        item, rest = self.flow(text, pos)
                        pos = len(text) - len(rest)
                    else:
                        match = re.match(r"""('(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^,\]\}]*)""", text[pos:])
                        item = self.scalar(match.group(1).strip())
                        pos += match.end()
            if opening == "[":
                items.append(item)
            else:
                items[key] = item
            while pos < len(text) and text[pos] == " ":
                pos += 1
            if pos < len(text) and text[pos] == ",":
                pos += 1

    def block_scalar(self, header, indent):
        match = re.fullmatch(r"([|>])([-+]?)\s*(#.*)?", header)
        if not match:
            self.fail(f"unsupported block scalar header {header!r}")
        style, chomp = match.group(1), match.group(2)
        raw = []
        content_indent = None
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() == "":
                raw.append("")
                self.i += 1
                continue
            width = len(line) - len(line.lstrip(" "))
            if content_indent is None:
                if width <= indent:
                    break
                content_indent = width
            if width < content_indent:
                break
            raw.append(line[content_indent:])
            self.i += 1
        while raw and raw[-1] == "":
            raw.pop()
            self.i -= 1  # give trailing blank lines back (they separate what follows)
        while self.i < len(self.lines) and self.lines[self.i].strip() == "":
            self.i += 1
        if style == "|":
            text = "\n".join(raw)
        else:
            text, pending_blank = "", 0
            for line in raw:
                if line == "":
                    pending_blank += 1
                    continue
                if text:
                    text += "\n" * pending_blank if pending_blank else " "
                text += line
                pending_blank = 0
        if chomp == "-" or not raw:
            return text
        return text + "\n"


def strip_comment(text):
    """Drops a ' #' comment from a plain scalar."""
    match = re.search(r"(^|\s)#", text)
    return text[: match.start()] if match else text


def load_yaml(path, use_pyyaml):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if use_pyyaml:
        import yaml  # noqa: PLC0415 (optional dependency)
        return yaml.safe_load(text)
    return MiniYaml(text).parse()


# --------------------------------------------------------------------------------------------


class Checker:
    def __init__(self):
        self.passed = 0
        self.problems = []
        self.notes = []

    def check(self, ok, problem):
        if ok:
            self.passed += 1
        else:
            self.problems.append(problem)
        return ok


def check_known_metrics(c):
    """KNOWN_METRICS names every metric src/metrics/ registers, and nothing else: a metric
    missing here would make every rule or panel on it fail this check, and one listed but
    gone would let them pass while Prometheus finds nothing."""
    registered = set()
    for name in sorted(os.listdir(METRICS_SOURCE)):
        if name.endswith(".rs"):
            with open(os.path.join(METRICS_SOURCE, name), encoding="utf-8") as source:
                registered |= set(re.findall(r'"(cphub_[a-z_]+)"', source.read()))
    for name in sorted(registered - KNOWN_METRICS.keys()):
        c.check(False, f"src/metrics/ registers {name}, which KNOWN_METRICS does not list")
    for name in sorted(KNOWN_METRICS.keys() - registered):
        c.check(False, f"KNOWN_METRICS lists {name}, which src/metrics/ does not register")
    c.check(bool(registered), "no metric found in src/metrics/")


def check_expr(c, where, expr, variables=None):
    """Metric names, label names and label values of one PromQL expression."""
    if variables is not None:
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
            c.check(var in variables or var in BUILTIN_VARS,
                    f"{where}: ${var} is not a dashboard variable")
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = []
    balanced = True
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in pairs.values():
            balanced = balanced and bool(stack) and stack.pop() == ch
    c.check(balanced and not stack and expr.count('"') % 2 == 0,
            f"{where}: unbalanced brackets or quotes in {expr!r}")
    metrics = set()
    for name in METRIC_RE.findall(expr):
        metric = base_metric(name)
        if c.check(metric in KNOWN_METRICS, f"{where}: unknown metric {name!r}"):
            metrics.add(metric)
            if name != metric:
                c.check(name.endswith(("_bucket", "_count", "_sum")), f"{where}: {name!r}")
    for name, body in SELECTOR_RE.findall(expr):
        metric = base_metric(name)
        if metric not in KNOWN_METRICS:
            continue
        allowed = KNOWN_METRICS[metric][1] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        for label, op, value in MATCHER_RE.findall(body):
            if not c.check(label in allowed, f"{where}: {name} has no label {label!r}"):
                continue
            known = KNOWN_VALUES.get((metric, label))
            if known is None or "$" in value:
                continue
            if op in ("=", "!="):
                literals = [value]
            elif re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*", value):
                literals = value.split("|")
            else:
                continue
            for literal in literals:
                c.check(any(k == literal if isinstance(k, str) else k.fullmatch(literal)
                            for k in known),
                        f"{where}: {name}{{{label}}} never takes the value {literal!r}")
    if metrics:
        allowed = set().union(*(KNOWN_METRICS[m][1] for m in metrics)) | TARGET_LABELS | {"le"}
        for _, labels in GROUPING_RE.findall(expr):
            for label in filter(None, (s.strip() for s in labels.split(","))):
                c.check(label in allowed, f"{where}: no metric in the expression has label {label!r}")
    return metrics


# --------------------------------------------------------------------------------------------


def check_dashboard(c):
    try:
        with open(DASHBOARD, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        c.check(False, f"{DASHBOARD}: {e}")
        return []
    c.check(True, "")
    c.check(isinstance(dash.get("title"), str) and dash["title"], "dashboard: no title")
    c.check(isinstance(dash.get("uid"), str) and dash["uid"], "dashboard: no uid")
    c.check(isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36,
            f"dashboard: schemaVersion {dash.get('schemaVersion')!r} < 36")

    templating = dash.get("templating", {}).get("list", [])
    variables = {v.get("name"): v for v in templating}
    # The data source: an import input (${DS_PROMETHEUS}) or a datasource variable.
    ds_names = {i.get("name") for i in dash.get("__inputs", [])
                if i.get("type") == "datasource" and i.get("pluginId") == "prometheus"}
    ds_names |= {n for n, v in variables.items()
                 if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    c.check(ds_names, "dashboard: neither a prometheus __inputs entry nor a datasource variable")
    ds_refs = {f"${{{n}}}" for n in ds_names} | {f"${n}" for n in ds_names}

    def uses_ds(obj):
        ds = obj.get("datasource")
        uid = ds.get("uid") if isinstance(ds, dict) else ds
        return uid in ds_refs and (not isinstance(ds, dict) or ds.get("type") in (None, "prometheus"))

    app = variables.get("app_id")
    if c.check(app is not None, "dashboard: no app_id variable"):
        query = app.get("query")
        query = query.get("query", "") if isinstance(query, dict) else str(query or "")
        c.check(app.get("type") == "query"
                and re.search(r"label_values\(\s*cphub_sessions_started_total\b.*,\s*app_id\s*\)", query),
                "dashboard: app_id must be label_values(cphub_sessions_started_total, app_id)")
        c.check(uses_ds(app), "dashboard: app_id variable does not use the data source variable")
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            check_expr(c, f"variable {name}", q.get("query", "") if isinstance(q, dict) else str(q),
                       variables)

    # Panels (a collapsed row keeps its panels inside it).
    panels = []
    for p in dash.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []) if p.get("type") == "row" and p.get("collapsed") else [])
    c.check(panels, "dashboard: no panels")
    ids = [p.get("id") for p in panels]
    c.check(all(isinstance(i, int) for i in ids), "dashboard: a panel without an integer id")
    dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    c.check(not dupes, f"dashboard: duplicate panel ids {dupes}")

    used = set()
    all_exprs = []
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        c.check(p.get("type") in PANEL_TYPES, f"{where}: unexpected type {p.get('type')!r}")
        c.check(isinstance(p.get("title"), str) and p["title"].strip(), f"{where}: no title")
        if p.get("type") == "row":
            continue
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        c.check(isinstance(unit, str) and unit, f"{where}: no unit")
        c.check(uses_ds(p), f"{where}: datasource is not the dashboard's prometheus variable")
        targets = p.get("targets", [])
        c.check(targets, f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        c.check(len(set(refs)) == len(refs) and all(refs), f"{where}: missing or repeated refId")
        panel_metrics = set()
        for t in targets:
            expr = t.get("expr", "")
            c.check(isinstance(expr, str) and expr.strip(), f"{where}: target {t.get('refId')} has no expr")
            c.check(uses_ds(t) or "datasource" not in t, f"{where}: target datasource")
            panel_metrics |= check_expr(c, where, expr, variables)
            all_exprs.append((f"dashboard:panel_{p.get('id')}_{t.get('refId')}", expr))
        c.check(panel_metrics, f"{where}: no target queries a cphub_ metric")
        used |= panel_metrics

    # Layout: inside the 24 columns, no two panels overlap.
    boxes = []
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        g = p.get("gridPos", {})
        ok = all(isinstance(g.get(k), int) for k in "xywh") and g["w"] > 0 and g["h"] > 0
        if c.check(ok, f"{where}: bad gridPos {g}"):
            c.check(g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= GRID_WIDTH,
                    f"{where}: gridPos {g} outside the {GRID_WIDTH} columns")
            boxes.append((where, g))
    for i, (wa, a) in enumerate(boxes):
        for wb, b in boxes[i + 1:]:
            overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                       and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
            c.check(not overlap, f"dashboard: {wa} overlaps {wb}")

    missing = sorted(set(KNOWN_METRICS) - used)
    c.check(not missing, f"dashboard: no panel shows {missing}")

    # The panels the dashboard is for.
    exprs = [e for _, e in all_exprs]
    wanted = {
        "session duration p50/p90/p99": lambda: all(
            any(re.search(rf"histogram_quantile\(\s*{q}\s*,.*cphub_session_duration_seconds_bucket", e)
                for e in exprs) for q in ("0.5", "0.9", "0.99")),
        "sign-check refusals excluding ok, retry and reconnect": lambda: any(
            re.search(r'cphub_sign_checks_total\{[^}]*result!~"ok\|retry\|reconnect"', e)
            for e in exprs),
        "CPH API non-2xx errors": lambda: any(
            re.search(r'cphub_cph_requests_total\{[^}]*status!~"2\.\."', e) for e in exprs),
        "CPH API p99 latency": lambda: any(
            re.search(r"histogram_quantile\(\s*0.99\s*,.*cphub_cph_request_duration_seconds_bucket", e)
            for e in exprs),
        "HTTP p99 latency": lambda: any(
            re.search(r"histogram_quantile\(\s*0.99\s*,.*cphub_http_request_duration_seconds_bucket", e)
            for e in exprs),
        "phones by state, stacked": lambda: any(
            p.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("stacking", {}).get("mode") == "normal"
            and any("cphub_phones" in t.get("expr", "") for t in p.get("targets", []))
            for p in panels),
    }
    for name, test in wanted.items():
        c.check(test(), f"dashboard: no panel for {name}")
    return all_exprs


def check_prometheus_config(c, use_pyyaml):
    try:
        config = load_yaml(PROM_CONFIG, use_pyyaml)
    except Exception as e:  # noqa: BLE001 (any parse error is the finding)
        c.check(False, f"{PROM_CONFIG}: {e}")
        return None
    c.check(isinstance(config, dict), f"{PROM_CONFIG}: not a mapping")
    if not isinstance(config, dict):
        return None
    jobs = [j for j in config.get("scrape_configs") or [] if j.get("job_name") == "cphub"]
    if c.check(len(jobs) == 1, "prometheus.yml: needs exactly one scrape config with job_name cphub"):
        job = jobs[0]
        interval = job.get("scrape_interval", (config.get("global") or {}).get("scrape_interval"))
        c.check(interval == "15s", f"prometheus.yml: cphub scrape_interval is {interval!r}, want 15s")
        c.check(job.get("metrics_path", "/metrics") == "/metrics", "prometheus.yml: metrics_path")
        targets = [t for s in job.get("static_configs") or [] for t in s.get("targets") or []]
        c.check(targets and all(re.fullmatch(r"[A-Za-z0-9.\-]+:[0-9]+", str(t)) for t in targets),
                f"prometheus.yml: cphub static targets {targets!r} are not host:port")
    rule_files = config.get("rule_files") or []
    resolved = [os.path.normpath(os.path.join(os.path.dirname(PROM_CONFIG), r)) for r in rule_files]
    c.check(os.path.normpath(ALERTS) in resolved,
            f"prometheus.yml: rule_files {rule_files!r} do not name alerts.yml")
    with open(PROM_CONFIG, encoding="utf-8") as f:
        comments = [line for line in f if line.lstrip().startswith("#")]
    c.check(any("metrics.listen" in line for line in comments),
            "prometheus.yml: no comment on metrics.listen")
    return config


def check_alerts(c, use_pyyaml):
    try:
        rules_file = load_yaml(ALERTS, use_pyyaml)
    except Exception as e:  # noqa: BLE001
        c.check(False, f"{ALERTS}: {e}")
        return None
    groups = (rules_file or {}).get("groups") if isinstance(rules_file, dict) else None
    if not c.check(isinstance(groups, list) and groups, "alerts.yml: no groups"):
        return rules_file
    names = [g.get("name") for g in groups]
    c.check(len(set(names)) == len(names), "alerts.yml: duplicate group names")
    c.check("cphub" in names, "alerts.yml: no group named cphub")
    seen = []
    for group in groups:
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            where = f"alert {name or rule.get('record')!r}"
            if not c.check(isinstance(name, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name),
                           f"{where}: not an alerting rule with a valid name"):
                continue
            seen.append(name)
            expr = rule.get("expr")
            if c.check(isinstance(expr, str) and expr.strip(), f"{where}: no expr"):
                metrics = check_expr(c, where, expr)
                c.check(metrics or "up{" in expr, f"{where}: uses no cphub_ metric")
                c.check('job="cphub"' in expr, f"{where}: expr not scoped to job=\"cphub\"")
            c.check(isinstance(rule.get("for"), str) and DURATION_RE.match(rule["for"]),
                    f"{where}: no 'for:' duration")
            c.check((rule.get("labels") or {}).get("severity") in SEVERITIES,
                    f"{where}: severity label not one of {sorted(SEVERITIES)}")
            annotations = rule.get("annotations") or {}
            for key in ("summary", "description"):
                c.check(isinstance(annotations.get(key), str) and annotations[key].strip(),
                        f"{where}: no {key} annotation")
            for text in annotations.values():
                c.check(str(text).count("{{") == str(text).count("}}"),
                        f"{where}: unbalanced template braces")
    dupes = sorted({n for n in seen if seen.count(n) > 1})
    c.check(not dupes, f"alerts.yml: duplicate alerts {dupes}")
    missing = sorted(REQUIRED_ALERTS - set(seen))
    c.check(not missing, f"alerts.yml: missing alerts {missing}")
    return rules_file


def parse_unit(path):
    """A systemd unit as {(section, key): [values]}; a key may repeat."""
    entries, section = {}, None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            key, sep, value = line.partition("=")
            if not sep or section is None:
                raise ValueError(f"line {number}: not a key=value inside a section: {line!r}")
            entries.setdefault((section, key.strip()), []).append(value.strip())
    return entries


def check_systemd_unit(c):
    try:
        unit = parse_unit(SYSTEMD_UNIT)
    except (OSError, ValueError) as e:
        c.check(False, f"{SYSTEMD_UNIT}: {e}")
        return
    for (section, key), want in UNIT_REQUIRED.items():
        values = unit.get((section, key))
        if c.check(values is not None, f"cphub.service: [{section}] {key} missing"):
            c.check(want is None or values[-1] == want,
                    f"cphub.service: [{section}] {key}={values[-1]!r}, want {want!r}")
    environment = " ".join(unit.get(("Service", "Environment"), []))
    c.check("sqlite:///var/lib/cphub/" in environment,
            "cphub.service: the SQLite database is not in the StateDirectory (/var/lib/cphub)")
    verify = shutil.which("systemd-analyze")
    if not verify:
        c.notes.append("systemd-analyze not found: the unit was only parsed")
        return
    done = subprocess.run([verify, "verify", SYSTEMD_UNIT], capture_output=True, text=True,
                          check=False)
    # The binary is installed where the unit runs, not where this check does.
    absent = f"Command {BINARY} is not executable: No such file or directory"
    lines = [l for l in (done.stdout + done.stderr).splitlines()
             if l.strip() and not (absent in l and not os.path.exists(BINARY))]
    c.check(not lines, "systemd-analyze verify cphub.service:\n" + "\n".join(lines))


def k8s_documents(use_pyyaml):
    with open(KUBERNETES, encoding="utf-8") as f:
        text = f.read()
    if use_pyyaml:
        import yaml  # noqa: PLC0415
        return [d for d in yaml.safe_load_all(text) if d]
    return [MiniYaml(part).parse() for part in re.split(r"(?m)^---\s*$", text) if part.strip()]


def check_kubernetes(c, use_pyyaml):
    try:
        docs = k8s_documents(use_pyyaml)
    except Exception as e:  # noqa: BLE001 (any parse error is the finding)
        c.check(False, f"{KUBERNETES}: {e}")
        return
    kinds = {d.get("kind"): d for d in docs if isinstance(d, dict)}
    for kind in ("Deployment", "Service", "ConfigMap"):
        c.check(kind in kinds, f"cphub.yaml: no {kind}")
    deployment = kinds.get("Deployment") or {}
    spec = (deployment.get("spec") or {}).get("template", {}).get("spec") or {}
    containers = spec.get("containers") or []
    if not c.check(len(containers) == 1, "cphub.yaml: the Deployment needs one container"):
        return
    container = containers[0]
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    c.check(ports.get("http") == 8080, f"cphub.yaml: container port http is {ports.get('http')}")
    for probe, path in PROBES.items():
        get = (container.get(probe) or {}).get("httpGet") or {}
        c.check(get.get("path") == path and get.get("port") in ("http", 8080),
                f"cphub.yaml: {probe} is {get!r}, want GET {path} on the http port")
    env = {e.get("name"): e for e in container.get("env") or []}
    secret = ((env.get("DATABASE_URL") or {}).get("valueFrom") or {}).get("secretKeyRef")
    c.check(bool(secret), "cphub.yaml: DATABASE_URL does not come from a Secret")
    c.check(env.get("CPHUB__SERVER__LISTEN", {}).get("value") == "0.0.0.0:8080",
            "cphub.yaml: CPHUB__SERVER__LISTEN is not 0.0.0.0:8080")
    service_ports = ((kinds.get("Service") or {}).get("spec") or {}).get("ports") or []
    c.check(any(p.get("targetPort") in ("http", 8080) for p in service_ports),
            "cphub.yaml: the Service does not target the http port")


def run_promtool(c, dashboard_exprs, required):
    promtool = shutil.which("promtool")
    if not promtool:
        c.check(not required, "promtool not found and --require-promtool given")
        c.notes.append("promtool not found: skipped promtool checks")
        return

    def run(*args):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        c.check(done.returncode == 0,
                f"promtool {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    # The YAML files as Prometheus itself reads them.
    run("check", "config", PROM_CONFIG)
    run("check", "rules", ALERTS)
    if os.path.exists(ALERT_TESTS):
        run("test", "rules", ALERT_TESTS)
    # Parse the dashboard queries as PromQL: one recording rule each, variables filled in.
    values = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "job": "cphub",
              "app_id": ".*"}
    rules = []
    for record, expr in dashboard_exprs:
        filled = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values.get(m.group(1), "x"), expr)
        rules.append({"record": record, "expr": filled})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
    try:
        run("check", "rules", f.name)  # failures name the rule dashboard:panel_<id>_<refId>
    finally:
        os.unlink(f.name)


def main(argv):
    use_pyyaml = "--no-pyyaml" not in argv
    if use_pyyaml:
        try:
            import yaml  # noqa: F401, PLC0415
        except ImportError:
            use_pyyaml = False
    c = Checker()
    check_known_metrics(c)
    exprs = check_dashboard(c)
    config = check_prometheus_config(c, use_pyyaml)
    rules = check_alerts(c, use_pyyaml)
    check_systemd_unit(c)
    check_kubernetes(c, use_pyyaml)
    if use_pyyaml:
        # Keep the fallback reader honest: it must read both files as PyYAML does.
        for path, parsed in ((PROM_CONFIG, config), (ALERTS, rules)):
            if parsed is None:
                continue  # PyYAML already failed on it
            try:
                mine = load_yaml(path, use_pyyaml=False)
            except YamlError as e:
                mine = e
            c.check(mine == parsed, f"{os.path.basename(path)}: the built-in YAML reader "
                                    "disagrees with PyYAML (python3 deploy/check.py --no-pyyaml)")
    else:
        c.notes.append("PyYAML not used: read the YAML files with the built-in reader")
    if "--no-promtool" not in argv:
        run_promtool(c, exprs, "--require-promtool" in argv)
    for note in c.notes:
        print(f"note: {note}")
    if c.problems:
        for problem in c.problems:
            print(f"FAIL: {problem}", file=sys.stderr)
        print(f"deploy artifacts: {len(c.problems)} of {len(c.problems) + c.passed} checks failed",
              file=sys.stderr)
        return 1
    print(f"deploy artifacts: {c.passed} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

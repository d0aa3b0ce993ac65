#!/usr/bin/python3
"""Checks the PromQL of dstrain's Grafana dashboards and Prometheus rule files.

For every expression — each panel target's `expr` (rows' nested panels too), each templating
variable's query (label_values(METRIC, LABEL) and query_result(EXPR) give an expression), each
annotation's `expr`, each rule's `expr`, and the queries that alert annotations build with
`{{ printf "..." ... | query }}` — it checks that:
  1. promtool parses it (all expressions go into one temporary rule file, one group each, as
     recording rules; `promtool check rules` names the groups that fail);
  2. every metric name it uses is known: scraped from the daemons (--metrics, Prometheus text
     exposition files; a histogram family gives NAME_bucket, NAME_sum and NAME_count), allowed
     explicitly (--allow, e.g. `up`), or recorded by a rule of the --rules files.
The dashboards are also linted (--datasource-uid): unique dashboard uids and panel ids, every
panel and target on that datasource, unique refIds, panels inside the 24-column grid and not
overlapping, schemaVersion set.

Exit status 0 when everything passes, 1 with one line per problem on stderr (FILE: WHERE: what),
2 for bad usage. Python 3 standard library and PyYAML only.

  promql_check.py --metrics coordinator.prom worker.prom --allow up \
      --rules deploy/prometheus/alerts.yaml --dashboards deploy/grafana/dashboards/*.json \
      [--datasource-uid dstrain-prometheus] [--promtool /usr/bin/promtool]
  promql_check.py --parse-only --rules ... --dashboards ...   (no metric names checked)
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

# --------------------------------------------------------------------------------------------
# Tokenizer and metric-name extraction.

KEYWORDS = {
    # binary set operators and modifiers
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2",
    # aggregation operators
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
    # number literals written as words
    "inf", "nan",
}
# Followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_OPERATORS = ["==", "!=", ">=", "<=", "=~", "!~", "=", ">", "<", "+", "-", "*", "/", "%", "^",
              "(", ")", "{", "}", "[", "]", ",", ":", "@"]


class PromQLError(ValueError):
    pass


def tokenize(expr):
    """Returns [(kind, text)]: kind is ident, string (its contents), number, duration or op."""
    tokens = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":  # a comment to the end of the line
            while i < n and expr[i] != "\n":
                i += 1
        elif c in "\"'`":
            j, value = i + 1, []
            while j < n and expr[j] != c:
                if expr[j] == "\\" and c != "`" and j + 1 < n:
                    value.append(expr[j:j + 2])
                    j += 2
                else:
                    value.append(expr[j])
                    j += 1
            if j >= n:
                raise PromQLError(f"unterminated string at {i}")
            tokens.append(("string", "".join(value)))
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            m = _DURATION.match(expr, i)
            # A duration only when no identifier character follows (1e3 is a number).
            if m and not (m.end() < n and (expr[m.end()].isalnum() or expr[m.end()] == "_")):
                tokens.append(("duration", m.group()))
                i = m.end()
                continue
            m = _NUMBER.match(expr, i)
            tokens.append(("number", m.group()))
            i = m.end()
        elif c.isalpha() or c in "_:":
            m = _IDENT.match(expr, i)
            word = m.group()
            tokens.append(("number" if word.lower() in ("inf", "nan") else "ident", word))
            i = m.end()
        else:
            for op in _OPERATORS:
                if expr.startswith(op, i):
                    tokens.append(("op", op))
                    i += len(op)
                    break
            else:
                raise PromQLError(f"unexpected character {c!r} at {i}")
    return tokens


def metric_names(expr):
    """The metric names an expression selects, in order of first use."""
    tokens = tokenize(expr)
    names = []
    # One entry per open bracket: "{" (label matchers), "labels" (a by/on/... list), "(" or "[".
    stack = []
    for k, (kind, text) in enumerate(tokens):
        nxt = tokens[k + 1] if k + 1 < len(tokens) else (None, None)
        prev = tokens[k - 1] if k > 0 else (None, None)
        if kind == "op":
            if text in "({[":
                if text == "(" and prev[0] == "ident" and prev[1] in LABEL_LIST_KEYWORDS:
                    stack.append("labels")
                else:
                    stack.append(text)
            elif text in ")}]":
                if not stack:
                    raise PromQLError(f"unbalanced {text!r}")
                stack.pop()
            continue
        if kind != "ident":
            continue
        inside = stack[-1] if stack else None
        if inside == "{":
            # A label name; `__name__="x"` names a metric.
            if text == "__name__" and nxt == ("op", "="):
                value = tokens[k + 2] if k + 2 < len(tokens) else (None, None)
                if value[0] == "string":
                    names.append(value[1])
            elif text == "__name__":
                raise PromQLError("a __name__ matcher other than = cannot be checked")
            continue
        if inside in ("labels", "["):
            continue
        if text.lower() in KEYWORDS:
            continue
        if nxt == ("op", "("):  # a function call
            continue
        names.append(text)
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r}")
    seen = set()
    return [x for x in names if not (x in seen or seen.add(x))]


# --------------------------------------------------------------------------------------------
# Grafana variables.

_GRAFANA_BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
    "__range_ms": "3600000", "__interval_ms": "60000",
}
_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]")


def substitute_grafana(expr):
    """Replaces Grafana's interval variables; leaves dashboard variables inside strings.
    A dashboard variable outside a string literal is an error (it would not parse as PromQL)."""
    out, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":  # copy the string literal as it is
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            out.append(expr[i:j + 1])
            i = j + 1
            continue
        m = _VARIABLE.match(expr, i)
        if m:
            name = m.group(1) or m.group(2) or m.group(3)
            if name not in _GRAFANA_BUILTINS:
                raise PromQLError(f"dashboard variable ${name} outside a string literal")
            out.append(_GRAFANA_BUILTINS[name])
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((.*)\)\s*$", re.S)


def variable_expr(query):
    """The PromQL inside a templating variable's query, or None when it has none."""
    m = _QUERY_RESULT.match(query)
    if m:
        return m.group(1)
    m = _LABEL_VALUES.match(query)
    if not m:
        return None  # label_names(), metrics(regex), a custom list ...
    args = m.group(1)
    depth, cut = 0, -1
    quote = None
    for i, c in enumerate(args):
        if quote:
            if c == quote:
                quote = None
            continue
        if c in "\"'`":
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            cut = i
    return args[:cut].strip() if cut >= 0 else None  # label_values(label): no metric


# --------------------------------------------------------------------------------------------
# Collecting expressions.


class Expr:
    def __init__(self, source, where, text):
        self.source, self.where, self.text = source, where, text


def _panels(panels):
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard_exprs(path, problems, datasource_uid=None):
    with open(path) as f:
        d = json.load(f)
    name = os.path.basename(path)
    out = []
    for p in _panels(d.get("panels", [])):
        where = f'panel {p.get("id")} "{p.get("title", "")}"'
        for t in p.get("targets", []):
            if "expr" in t:
                out.append(Expr(name, f'{where} target {t.get("refId", "?")}', t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        e = variable_expr(q or "")
        if e is not None:
            out.append(Expr(name, f'variable "{v.get("name")}"', e))
    for a in d.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append(Expr(name, f'annotation "{a.get("name")}"', a["expr"]))
    if datasource_uid is not None:
        lint_dashboard(name, d, datasource_uid, problems)
    return out, d.get("uid")


def lint_dashboard(name, d, datasource_uid, problems):
    def problem(where, what):
        problems.append(f"{name}: {where}: {what}")

    if not d.get("uid"):
        problem("dashboard", "no uid")
    if not isinstance(d.get("schemaVersion"), int):
        problem("dashboard", "no schemaVersion")
    ids = {}
    boxes = []
    for p in _panels(d.get("panels", [])):
        where = f'panel {p.get("id")} "{p.get("title", "")}"'
        if not isinstance(p.get("id"), int):
            problem(where, "no integer id")
        elif p["id"] in ids:
            problem(where, f"id {p['id']} also used by {ids[p['id']]}")
        else:
            ids[p["id"]] = where
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy"):
            problem(where, "no gridPos h, w, x, y")
            continue
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
            problem(where, f"gridPos {g} outside the 24 columns")
        for other, og in boxes:
            if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                    and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                problem(where, f"overlaps {other}")
        boxes.append((where, g))
        if p.get("type") == "row":
            continue
        ds = p.get("datasource") or {}
        if ds.get("uid") != datasource_uid:
            problem(where, f"datasource {ds} is not uid {datasource_uid}")
        refs = set()
        for t in p.get("targets", []):
            if (t.get("datasource") or {}).get("uid") != datasource_uid:
                problem(where, f"target {t.get('refId')}: datasource is not uid {datasource_uid}")
            if t.get("refId") in refs:
                problem(where, f"refId {t.get('refId')} twice")
            refs.add(t.get("refId"))
        if p.get("type") not in ("text",) and not p.get("targets"):
            problem(where, "no targets")
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") != datasource_uid:
            problem(f'variable "{v.get("name")}"', f"datasource is not uid {datasource_uid}")


# {{ ... printf "FORMAT" args ... | query }} in an alert's annotations.
_TEMPLATE_QUERY = re.compile(r'printf\s+"((?:[^"\\]|\\.)*)"[^}]*\|\s*query')


def template_queries(text):
    """The PromQL that annotation templates pass to `query`, with %q/%s/%v arguments filled."""
    out = []
    for m in _TEMPLATE_QUERY.finditer(text):
        fmt = m.group(1).replace('\\"', '"').replace("\\\\", "\\")
        out.append(re.sub(r"%[qsv]", lambda x: '"x"' if x.group() == "%q" else "x", fmt))
    return out


def rule_exprs(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    name = os.path.basename(path)
    out, records = [], set()
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            kind = "alert" if "alert" in r else "record"
            label = r.get(kind)
            where = f'group "{g.get("name")}" {kind} {label}'
            out.append(Expr(name, where, r["expr"]))
            if kind == "record":
                records.add(label)
            for key, text in sorted((r.get("annotations") or {}).items()):
                for q in template_queries(text):
                    out.append(Expr(name, f"{where} annotation {key}", q))
    return out, records


# --------------------------------------------------------------------------------------------
# Known metric names.


def exposition_names(path):
    """Metric names a Prometheus text exposition offers."""
    names, types = set(), {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3]
                continue
            m = _IDENT.match(line)
            if m:
                names.add(m.group())
    for family, kind in types.items():
        if kind == "histogram":
            names.update({family + "_bucket", family + "_sum", family + "_count"})
        elif kind == "summary":
            names.update({family, family + "_sum", family + "_count"})
        else:
            names.add(family)
    return names


# --------------------------------------------------------------------------------------------
# Parsing with promtool.


def promtool_parse(exprs, promtool):
    """[(Expr, error)] for the expressions promtool cannot parse."""
    if not exprs:
        return []
    groups = [{"name": f"e{i}", "rules": [{"record": f"promql_check:e{i}", "expr": e.parsed}]}
              for i, e in enumerate(exprs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "exprs.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": groups}, f, width=1 << 20)
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    if r.returncode == 0:
        return []
    out = r.stdout + r.stderr
    failed = []
    for line in out.splitlines():
        m = re.search(r'group "e(\d+)", rule \d+, "[^"]*": (.*)', line)
        if m:
            failed.append((exprs[int(m.group(1))], m.group(2)))
    if not failed:
        raise RuntimeError(f"promtool check rules failed:\n{out}")
    return failed


# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", nargs="*", default=[], help="scraped /metrics text files")
    ap.add_argument("--allow", nargs="*", default=[], help="more known metric names")
    ap.add_argument("--rules", nargs="*", default=[], help="Prometheus rule files")
    ap.add_argument("--dashboards", nargs="*", default=[], help="Grafana dashboard JSON files")
    ap.add_argument("--datasource-uid", help="lint the dashboards: every query on this uid")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--list", action="store_true",
                    help="print every expression's metric names (for reading)")
    ap.add_argument("--parse-only", action="store_true",
                    help="check parsing (and lint) only, not the metric names")
    args = ap.parse_args(argv)
    if not args.metrics and not args.allow and not args.parse_only:
        ap.error("no known metric names: give --metrics and/or --allow (or --parse-only)")

    problems = []
    known = set(args.allow)
    for path in args.metrics:
        found = exposition_names(path)
        if not found:
            problems.append(f"{path}: no metrics in it")
        known |= found

    exprs = []
    for path in args.rules:
        found, records = rule_exprs(path)
        exprs += found
        known |= records
    uids = {}
    for path in args.dashboards:
        found, uid = dashboard_exprs(path, problems, args.datasource_uid)
        exprs += found
        if args.datasource_uid is not None and uid in uids:
            problems.append(f"{os.path.basename(path)}: uid {uid} also used by {uids[uid]}")
        uids[uid] = os.path.basename(path)

    parseable = []
    for e in exprs:
        try:
            e.parsed = substitute_grafana(e.text)
            e.names = metric_names(e.parsed)
            parseable.append(e)
        except PromQLError as err:
            problems.append(f"{e.source}: {e.where}: {err}: {e.text}")
    for e, err in promtool_parse(parseable, args.promtool):
        problems.append(f"{e.source}: {e.where}: promtool: {err}")
        parseable.remove(e)
    for e in parseable:
        if args.list:
            print(f"{e.source}: {e.where}: {' '.join(e.names)}")
        if not e.names and "time()" not in e.parsed and "vector(" not in e.parsed:
            problems.append(f"{e.source}: {e.where}: uses no metric: {e.text}")
        for name in e.names:
            if not args.parse_only and name not in known:
                problems.append(f"{e.source}: {e.where}: unknown metric {name}")

    for p in problems:
        print(p, file=sys.stderr)
    print(f"promql_check: {len(exprs)} expressions, {len(known)} known metric names, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

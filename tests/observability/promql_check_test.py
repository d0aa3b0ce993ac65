#!/usr/bin/python3
"""Unit tests of promql_check.py: the tokenizer and metric-name extraction on known
expressions, Grafana variable handling, and the checker's verdicts on small dashboards and rule
files, negative cases included (an unknown metric, a parse error, lint errors)."""
import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promql_check as pc  # noqa: E402


class MetricNamesTest(unittest.TestCase):
    CASES = [
        ("up", ["up"]),
        ("dstrain_jobs{state=\"RUNNING\"}", ["dstrain_jobs"]),
        # Aggregation with a label list before and after the body.
        ("sum by (le, method) (rate(dstrain_coordinator_rpc_duration_seconds_bucket[5m]))",
         ["dstrain_coordinator_rpc_duration_seconds_bucket"]),
        ("sum(rate(x_total[1m])) by (instance) / sum without (rank) (y)", ["x_total", "y"]),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket{job_id=\"$job\"}[5m])))",
         ["h_bucket"]),
        # Vector matching: on/ignoring/group_left/group_right label lists are labels.
        ("a > on (job, instance) group_left () b", ["a", "b"]),
        ("a * on (job, instance, job_id) group_left (device) b", ["a", "b"]),
        ("a / ignoring (le) group_right (kind, state) b", ["a", "b"]),
        # Set operators, bool, offset, keywords as label values in strings.
        ("x and y or z unless w", ["x", "y", "z", "w"]),
        ("count(up) > bool 0", ["up"]),
        ("c_total offset 15m unless c_total offset -5m", ["c_total"]),
        ("m{state=~\"PENDING|RESTARTING\", by=\"sum\"}", ["m"]),
        # Functions and their string arguments.
        ("label_replace(m{device=~\"cuda|auto\"}, \"kind\", \"gpu\", \"\", \"\")", ["m"]),
        ("quantile_over_time(0.5, t[30m:1m])", ["t"]),
        ("topk(3, foo) + bottomk(2, bar)", ["foo", "bar"]),
        ("count_values(\"value\", build_info)", ["build_info"]),
        ("quantile(0.9, lat)", ["lat"]),
        ("time() - ts_seconds", ["ts_seconds"]),
        ("vector(1)", []),
        # NaN and Inf are numbers; so are exponents and hex.
        ("l != l or abs(l) == +Inf or l == NaN", ["l"]),
        ("1e3 * a + 0x1F * b - .5", ["a", "b"]),
        # Recording-rule names with colons.
        ("dstrain:job_queued_fits unless dstrain:job_usable_free_slots",
         ["dstrain:job_queued_fits", "dstrain:job_usable_free_slots"]),
        # __name__ matchers name the metric.
        ("{__name__=\"foo_total\", job=\"x\"}", ["foo_total"]),
        # Comments are ignored.
        ("a # b c\n + d", ["a", "d"]),
        # The @ modifier.
        ("rate(r_total[5m] @ end())", ["r_total"]),
        # Repeated names are listed once, in order of first use.
        ("b + a + b", ["b", "a"]),
    ]

    def test_known_expressions(self):
        for expr, want in self.CASES:
            with self.subTest(expr=expr):
                self.assertEqual(pc.metric_names(expr), want)

    def test_tokens(self):
        self.assertEqual(pc.tokenize('rate(x{a="b\\"c"}[5m]) > 1e-3'), [
            ("ident", "rate"), ("op", "("), ("ident", "x"), ("op", "{"), ("ident", "a"),
            ("op", "="), ("string", 'b\\"c'), ("op", "}"), ("op", "["), ("duration", "5m"),
            ("op", "]"), ("op", ")"), ("op", ">"), ("number", "1e-3")])
        self.assertEqual(pc.tokenize("x[1h30m]")[2], ("duration", "1h30m"))

    def test_errors(self):
        for bad in ["sum(x", "x{a=\"b\"", "x)", "x{__name__=~\"a.*\"}", "\"open"]:
            with self.subTest(expr=bad):
                with self.assertRaises(pc.PromQLError):
                    pc.metric_names(bad)


class GrafanaTest(unittest.TestCase):
    def test_builtin_intervals(self):
        self.assertEqual(
            pc.substitute_grafana('rate(x{job_id="$job"}[$__rate_interval])'),
            'rate(x{job_id="$job"}[5m])')
        self.assertEqual(pc.substitute_grafana("increase(x[${__range}])"), "increase(x[1h])")

    def test_variable_outside_a_string(self):
        with self.assertRaises(pc.PromQLError):
            pc.substitute_grafana("rate(x[$interval])")

    def test_variable_queries(self):
        self.assertEqual(pc.variable_expr("label_values(dstrain_job_info, job_id)"),
                         "dstrain_job_info")
        self.assertEqual(
            pc.variable_expr('label_values(dstrain_job_info{state=~"A|B", x=","}, job_id)'),
            'dstrain_job_info{state=~"A|B", x=","}')
        self.assertIsNone(pc.variable_expr("label_values(job_id)"))
        self.assertEqual(pc.variable_expr("query_result(sum by (a) (x))"), "sum by (a) (x)")
        self.assertIsNone(pc.variable_expr("metrics(dstrain_.*)"))

    def test_template_queries(self):
        text = ('ranks {{ with printf "w{job_id=%q,instance=%q}" $labels.job_id '
                '$labels.instance | query }}{{ . | first | value }}{{ end }} and '
                '{{ with printf "m{s=\\"LOST\\"}" | query }}{{ end }}')
        self.assertEqual(pc.template_queries(text), ['w{job_id="x",instance="x"}',
                                                     'm{s="LOST"}'])


class ExpositionTest(unittest.TestCase):
    def test_histograms_and_summaries(self):
        text = "\n".join([
            "# HELP h_seconds A histogram.", "# TYPE h_seconds histogram",
            'h_seconds_bucket{le="+Inf"} 1', "h_seconds_sum 1", "h_seconds_count 1",
            "# TYPE s summary", 's{quantile="0.5"} 1',
            "# TYPE g gauge", 'g{a="b"} 1', "plain 2", ""])
        with tempfile.NamedTemporaryFile("w", suffix=".prom", delete=False) as f:
            f.write(text)
        try:
            self.assertEqual(pc.exposition_names(f.name), {
                "h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "s", "s_sum", "s_count",
                "g", "plain"})
        finally:
            os.unlink(f.name)


def panel(pid, title, *exprs, uid="ds", y=0):
    return {"id": pid, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": uid},
            "gridPos": {"h": 8, "w": 12, "x": 0, "y": y},
            "targets": [{"datasource": {"type": "prometheus", "uid": uid}, "expr": e,
                         "refId": chr(ord("A") + i)} for i, e in enumerate(exprs)]}


class CheckerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.metrics = self.write("m.prom", "\n".join([
            "# TYPE dstrain_train_loss gauge", 'dstrain_train_loss{job_id="a"} 2',
            "# TYPE dstrain_train_step_seconds histogram",
            'dstrain_train_step_seconds_bucket{le="+Inf"} 1',
            "dstrain_train_step_seconds_sum 1", "dstrain_train_step_seconds_count 1", ""]))

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text if isinstance(text, str) else json.dumps(text))
        return path

    def dashboard(self, panels, variables=(), uid="d1", name="d.json"):
        return self.write(name, {"uid": uid, "schemaVersion": 39, "panels": panels,
                                 "templating": {"list": list(variables)}})

    def run_checker(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = pc.main(["--metrics", self.metrics, "--allow", "up", *args])
        return rc, err.getvalue()

    def test_known_metrics_pass(self):
        d = self.dashboard([
            panel(1, "Loss", 'dstrain_train_loss{job_id="$job"}'),
            panel(2, "Step time", "histogram_quantile(0.9, sum by (le) "
                  "(rate(dstrain_train_step_seconds_bucket[$__rate_interval])))", y=8)],
            [{"name": "job", "type": "query", "datasource": {"uid": "ds"},
              "query": {"query": "label_values(dstrain_train_loss, job_id)"}}])
        rc, err = self.run_checker("--dashboards", d, "--datasource-uid", "ds")
        self.assertEqual((rc, err), (0, ""))

    def test_unknown_metric_names_panel_and_metric(self):
        d = self.dashboard([panel(7, "Loss", "dstrain_train_loss"),
                            panel(8, "Typo", "max(dstrain_train_losss)", y=8)])
        rc, err = self.run_checker("--dashboards", d)
        self.assertEqual(rc, 1)
        self.assertIn('d.json: panel 8 "Typo" target A: unknown metric dstrain_train_losss', err)
        self.assertNotIn("panel 7", err)

    def test_histogram_base_name_is_not_a_series(self):
        d = self.dashboard([panel(1, "Bare", "rate(dstrain_train_step_seconds[5m])")])
        rc, err = self.run_checker("--dashboards", d)
        self.assertEqual(rc, 1)
        self.assertIn("unknown metric dstrain_train_step_seconds", err)

    def test_unknown_metric_in_a_variable(self):
        d = self.dashboard([], [{"name": "job", "type": "query",
                                 "query": "label_values(dstrain_nope, job_id)"}])
        rc, err = self.run_checker("--dashboards", d)
        self.assertEqual(rc, 1)
        self.assertIn('variable "job": unknown metric dstrain_nope', err)

    def test_unknown_metric_in_a_collapsed_row(self):
        row = {"id": 1, "type": "row", "title": "R", "collapsed": True,
               "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
               "panels": [panel(2, "Inner", "dstrain_gone", y=1)]}
        rc, err = self.run_checker("--dashboards", self.dashboard([row]))
        self.assertEqual(rc, 1)
        self.assertIn('panel 2 "Inner" target A: unknown metric dstrain_gone', err)

    def test_parse_error_names_the_panel(self):
        d = self.dashboard([panel(3, "Broken", "sum(rate(dstrain_train_loss[5m])",
                                  "dstrain_train_loss"),
                            panel(4, "Broken too", "dstrain_train_loss > > 1", y=8)])
        rc, err = self.run_checker("--dashboards", d)
        self.assertEqual(rc, 1)
        self.assertIn('panel 3 "Broken" target A: unclosed', err)
        self.assertIn('panel 4 "Broken too" target A: promtool: could not parse expression', err)
        self.assertNotIn("target B", err)

    def test_rules(self):
        rules = self.write("r.yaml", "\n".join([
            "groups:", "  - name: g", "    rules:",
            "      - record: job:loss:max", "        expr: max by (job_id) (dstrain_train_loss)",
            "      - alert: A", "        expr: job:loss:max > 3 and dstrain_train_losses > 0",
            "        annotations:",
            '          d: \'{{ with printf "dstrain_other{job_id=%q}" $labels.job_id | query }}'
            '{{ end }}\'', ""]))
        rc, err = self.run_checker("--rules", rules)
        self.assertEqual(rc, 1)
        lines = sorted(err.splitlines())
        self.assertEqual(lines, [
            'r.yaml: group "g" alert A annotation d: unknown metric dstrain_other',
            'r.yaml: group "g" alert A: unknown metric dstrain_train_losses'])

    def test_lint(self):
        d = self.dashboard([panel(1, "One", "dstrain_train_loss"),
                            panel(1, "Same id", "dstrain_train_loss", y=4),
                            panel(3, "Elsewhere", "dstrain_train_loss", uid="other", y=20)])
        rc, err = self.run_checker("--dashboards", d, "--datasource-uid", "ds")
        self.assertEqual(rc, 1)
        self.assertIn('panel 1 "Same id": id 1 also used by panel 1 "One"', err)
        self.assertIn('panel 1 "Same id": overlaps panel 1 "One"', err)
        self.assertIn('panel 3 "Elsewhere": datasource', err)

    def test_duplicate_dashboard_uids(self):
        a = self.dashboard([panel(1, "A", "up")], name="a.json")
        b = self.dashboard([panel(1, "B", "up")], name="b.json")
        rc, err = self.run_checker("--dashboards", a, b, "--datasource-uid", "ds")
        self.assertEqual(rc, 1)
        self.assertIn("b.json: uid d1 also used by a.json", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)

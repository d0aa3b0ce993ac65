#!/usr/bin/python3
"""deploy/grafana: the dashboards' PromQL parses (promtool) and they lint clean on the
provisioned datasource's uid (promql_check.py --parse-only); the provisioning files fit the
dashboards; each board shows what it is for (the metrics below appear in its queries); the job
board is templated by `job` and every per-job query is filtered by it.

The metric names themselves are checked against running daemons by metrics_names_test."""
import glob
import json
import os
import sys
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import promql_check as pc  # noqa: E402

ROOT = os.path.join(os.environ.get("TEST_SRCDIR", ""), os.environ.get("TEST_WORKSPACE", ""))
if not os.environ.get("TEST_SRCDIR"):
    ROOT = os.path.dirname(os.path.dirname(HERE))
GRAFANA = os.path.join(ROOT, "deploy", "grafana")
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yaml")

FLEET_METRICS = [
    "up", "dstrain_jobs", "dstrain_queue_depth", "dstrain_workers", "dstrain_slots",
    "dstrain_worker_heartbeat_age_max_seconds", "dstrain_coordinator_worker_heartbeat_age_seconds",
    "dstrain_worker_lease_seconds", "dstrain_worker_heartbeat_age_seconds",
    "dstrain_coordinator_rpcs_total", "dstrain_coordinator_rpc_duration_seconds_bucket",
    "dstrain_worker_trainer_exits_total", "dstrain_worker_coordinator_errors_total",
    "dstrain_worker_ranks", "dstrain_worker_slots", "dstrain_worker_gpus",
    "dstrain_job_info", "dstrain_job_queued_seconds",
]
JOB_METRICS = [
    "dstrain_train_loss", "dstrain_train_val_loss", "dstrain_train_learning_rate",
    "dstrain_train_grad_norm", "dstrain_train_loss_scale", "dstrain_train_tokens_per_second",
    "dstrain_train_step_seconds_bucket", "dstrain_train_memory_bytes",
    "dstrain_train_comm_bytes_total", "dstrain_train_comm_wait_seconds_total",
    "dstrain_checkpoint_save_duration_seconds_bucket", "dstrain_checkpoint_bytes_total",
    "dstrain_checkpoint_save_failures_total", "dstrain_train_skipped_steps_total",
    "dstrain_job_step", "dstrain_job_train_steps", "dstrain_job_restarts",
    "dstrain_job_max_restarts", "dstrain_worker_device_memory_bytes", "dstrain_train_nvme_bytes",
    "dstrain_train_pipeline_bubble_fraction",
]


def load(name):
    with open(os.path.join(GRAFANA, "dashboards", name)) as f:
        return json.load(f)


def exprs(d):
    out = []
    for p in pc._panels(d["panels"]):
        out += [(p, t) for t in p.get("targets", [])]
    return out


def names(d):
    found = set()
    for _, t in exprs(d):
        found.update(pc.metric_names(pc.substitute_grafana(t["expr"])))
    return found


class DashboardsTest(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(GRAFANA, "provisioning", "datasources", "dstrain.yaml")) as f:
            self.datasources = yaml.safe_load(f)["datasources"]
        self.uid = self.datasources[0]["uid"]

    def test_parse_and_lint(self):
        files = sorted(glob.glob(os.path.join(GRAFANA, "dashboards", "*.json")))
        self.assertEqual([os.path.basename(f) for f in files],
                         ["dstrain-fleet.json", "dstrain-job.json"])
        rc = pc.main(["--parse-only", "--rules", ALERTS, "--dashboards", *files,
                      "--datasource-uid", self.uid])
        self.assertEqual(rc, 0)

    def test_provisioning(self):
        self.assertEqual(len(self.datasources), 1)
        ds = self.datasources[0]
        self.assertEqual((ds["type"], ds["uid"]), ("prometheus", "dstrain-prometheus"))
        self.assertFalse(ds.get("isDefault"))
        with open(os.path.join(GRAFANA, "provisioning", "dashboards", "dstrain.yaml")) as f:
            providers = yaml.safe_load(f)["providers"]
        self.assertEqual(len(providers), 1)
        self.assertEqual(providers[0]["type"], "file")
        self.assertTrue(providers[0]["options"]["path"].startswith("/"))

    def test_fleet_board(self):
        d = load("dstrain-fleet.json")
        self.assertEqual((d["uid"], d["schemaVersion"]), ("dstrain-fleet", 39))
        missing = set(FLEET_METRICS) - names(d)
        self.assertFalse(missing, f"the fleet board does not show {sorted(missing)}")
        # Latency quantiles come from the histogram.
        quantiles = [t["expr"] for _, t in exprs(d) if "histogram_quantile" in t["expr"]]
        self.assertTrue(any("dstrain_coordinator_rpc_duration_seconds_bucket" in e
                            for e in quantiles))
        # The job table links to the job board by its uid.
        job_uid = load("dstrain-job.json")["uid"]
        links = json.dumps(d)
        self.assertIn(f"/d/{job_uid}/", links)

    def test_job_board(self):
        d = load("dstrain-job.json")
        self.assertEqual((d["uid"], d["schemaVersion"]), ("dstrain-job", 39))
        missing = set(JOB_METRICS) - names(d)
        self.assertFalse(missing, f"the job board does not show {sorted(missing)}")
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertIn("job", variables)
        query = variables["job"]["query"]
        query = query["query"] if isinstance(query, dict) else query
        self.assertEqual(pc.variable_expr(query), "dstrain_job_info")
        self.assertTrue(query.rstrip(")").endswith("job_id"))
        # Every query of a job's series is filtered by the variable.
        for p, t in exprs(d):
            with self.subTest(panel=p["title"], ref=t["refId"]):
                self.assertIn('job_id="$job"', t["expr"])
        for a in d["annotations"]["list"]:
            if "expr" in a:
                self.assertIn('job_id="$job"', a["expr"])
        heatmaps = [p for p in pc._panels(d["panels"]) if p["type"] == "heatmap"]
        self.assertEqual(len(heatmaps), 1)
        self.assertEqual(heatmaps[0]["targets"][0]["format"], "heatmap")
        self.assertIn("dstrain_train_step_seconds_bucket", heatmaps[0]["targets"][0]["expr"])

    def test_panel_ids_are_stable(self):
        # Panel ids are part of links (viewPanel=N) and of Grafana's saved state: a change here
        # is deliberate, made by updating this list.
        want = {
            "dstrain-fleet.json": {2: "Coordinator up", 12: "Jobs that have not ended",
                                   17: "Heartbeat age (coordinator's view)",
                                   23: "RPC latency quantiles (all methods)"},
            "dstrain-job.json": {10: "Loss", 19: "Step time heatmap", 24: "Memory by category",
                                 32: "Checkpoint save time"},
        }
        for name, ids in want.items():
            panels = {p["id"]: p["title"] for p in pc._panels(load(name)["panels"])}
            for pid, title in ids.items():
                self.assertEqual(panels.get(pid), title, f"{name} panel {pid}")


if __name__ == "__main__":
    unittest.main(verbosity=2)

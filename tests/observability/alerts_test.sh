#!/usr/bin/env bash
# deploy/prometheus: the rule file passes `promtool check rules`, its unit tests pass
# `promtool test rules`, every alert has a firing and a silent case among them, the unit tests
# catch the edge cases they are written for (each mutation of alerts.yaml below must fail them),
# render.sh renames the scrape jobs completely (the unit tests pass on rendered rules with the
# same names in their input), and prometheus.yml passes `promtool check config`.
set -euo pipefail
src="$TEST_SRCDIR/$TEST_WORKSPACE/deploy/prometheus"
tmp="$TEST_TMPDIR/alerts"
rm -rf "$tmp" && mkdir -p "$tmp"
tests=(alerts_test.yaml alerts_jobs_test.yaml alerts_training_test.yaml)
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== promtool check rules / test rules / check config"
promtool check rules "$src/alerts.yaml"
(cd "$src" && promtool test rules "${tests[@]}")
cp "$src/prometheus.yml" "$src/alerts.yaml" "$tmp/"
promtool check config "$tmp/prometheus.yml"

echo "== every alert fires in some test and stays silent in another"
/usr/bin/python3 - "$src" "${tests[@]}" <<'PY'
import sys, yaml
src, files = sys.argv[1], sys.argv[2:]
alerts = [r["alert"] for g in yaml.safe_load(open(f"{src}/alerts.yaml"))["groups"]
          for r in g["rules"] if "alert" in r]
fires, silent = set(), set()
for f in files:
    for t in yaml.safe_load(open(f"{src}/{f}"))["tests"]:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else silent).add(a["alertname"])
missing = [f"{a}: no firing case" for a in alerts if a not in fires]
missing += [f"{a}: no silent case" for a in alerts if a not in silent]
missing += [f"{a}: tested but not in alerts.yaml" for a in (fires | silent) - set(alerts)]
if missing:
    sys.exit("\n".join(missing))
print(f"{len(alerts)} alerts, each with firing and silent cases")
PY

echo "== mutations of alerts.yaml fail the unit tests"
/usr/bin/python3 - "$src" "$tmp" "${tests[@]}" <<'PY'
import os, shutil, subprocess, sys
src, tmp, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
rules = open(f"{src}/alerts.yaml").read()
# (what the unit tests pin, text in alerts.yaml, its replacement)
mutations = [
    ("checkpoint_every 0 never alerts",
     "          and\n          dstrain_job_checkpoint_every_steps > 0\n", ""),
    ("a job behind a blocked head does not alert",
     "          unless on (job, instance)\n", "          and on (job, instance)\n"),
    ("only free slots count",
     'dstrain_slots{state="free"}', 'dstrain_slots{state="used"}'),
    ("a cuda job needs GPU slots",
     'device=~"cpu|auto"', 'device=~"cpu|auto|cuda"'),
    ("a budget of 0 never alerts",
     "          and\n          dstrain_job_max_restarts > 0\n", ""),
    ("an infinite loss alerts",
     "          or\n          abs(dstrain_train_loss) == +Inf\n", ""),
    ("the loss-scale search at the start does not alert",
     "increase(dstrain_train_skipped_steps_total[15m]) > 32", "increase(dstrain_train_skipped_steps_total[15m]) > 0"),
    ("a failures counter born above 0 alerts",
     "          or\n          (\n            dstrain_checkpoint_save_failures_total > 0\n", "          and\n          (\n            dstrain_checkpoint_save_failures_total > 0\n"),
    ("a stuck queue alerts only after its for",
     "        for: 5m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"dstrain job {{ $labels.job_id }} queued",
     "        for: 1m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"dstrain job {{ $labels.job_id }} queued"),
    ("a momentary late heartbeat does not alert",
     "        for: 1m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"dstrain worker {{ $labels.worker_id }}",
     "        for: 0m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"dstrain worker {{ $labels.worker_id }}"),
]
bad = []
for what, old, new in mutations:
    if rules.count(old) != 1:
        bad.append(f"mutation '{what}': its text is not in alerts.yaml exactly once")
        continue
    d = os.path.join(tmp, "mutant")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    open(f"{d}/alerts.yaml", "w").write(rules.replace(old, new))
    for t in tests:
        shutil.copy(f"{src}/{t}", d)
    if subprocess.run(["promtool", "check", "rules", "alerts.yaml"], cwd=d,
                      capture_output=True).returncode != 0:
        bad.append(f"mutation '{what}': the mutant does not parse")
        continue
    r = subprocess.run(["promtool", "test", "rules", *tests], cwd=d, capture_output=True)
    print(f"{'caught' if r.returncode else 'MISSED'}: {what}")
    if r.returncode == 0:
        bad.append(f"mutation '{what}': the unit tests still pass")
if bad:
    sys.exit("\n".join(bad))
PY

echo "== render.sh: other scrape job names"
"$src/render.sh" my-coordinator monitoring/my-worker > "$tmp/rendered.yaml"
promtool check rules "$tmp/rendered.yaml"
grep -q 'dstrain-coordinator\|dstrain-worker' <(grep -v '^ *#' "$tmp/rendered.yaml") &&
  fail "render.sh left a default job name"
grep -v '^ *#' "$tmp/rendered.yaml" > "$tmp/rendered-rules.yaml"
[[ $(grep -c 'up{job="my-coordinator"}' "$tmp/rendered-rules.yaml") == 2 ]] || fail "coordinator job"
[[ $(grep -c 'up{job="monitoring/my-worker"}' "$tmp/rendered-rules.yaml") == 1 ]] || fail "worker job"
mkdir -p "$tmp/rendered"
cp "$tmp/rendered.yaml" "$tmp/rendered/alerts.yaml"
for t in "${tests[@]}"; do
  sed -e 's|dstrain-coordinator|my-coordinator|g' -e 's|dstrain-worker|monitoring/my-worker|g' \
    "$src/$t" > "$tmp/rendered/$t"
done
(cd "$tmp/rendered" && promtool test rules "${tests[@]}") || fail "unit tests on rendered rules"
if "$src/render.sh" 'bad"name' x > /dev/null 2>&1; then fail "render.sh took a quote"; fi
echo "PASS"

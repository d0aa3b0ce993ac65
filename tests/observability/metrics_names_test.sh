#!/usr/bin/env bash
# The metric names the dashboards and alerting rules use are the ones the daemons export, taken
# from running daemons rather than from a list kept by hand:
#   1. a coordinator, a worker with 5 CPU slots and one with a fake GPU (tests/lib/service.sh:
#      TLS, tokens, trainers confined to the test's directory) run four jobs at once: "main" (2
#      ranks, ZeRO-1, an evaluation and a checkpoint every 3 steps), "pipe" (2 pipeline stages),
#      "nvme" (fp16 with the optimizer state offloaded to NVMe) and "gpu" (job.device cuda, run
#      by the agent tests' stand-in trainer, whose metrics lines carry device memory as a GPU
#      trainer's do), so every family appears;
#   2. once the workers' /metrics show the validation loss, the pipeline, NVMe, swap and device
#      memory figures and the coordinator's the first committed checkpoint, all are scraped;
#   3. promql_check.py checks every expression of deploy/grafana/dashboards and
#      deploy/prometheus/alerts.yaml against those names (plus Prometheus's own `up`); a
#      dashboard with a misspelt metric fails, naming the panel and the metric;
#   4. the per-job coordinator series have the values the contract gives them;
#   5. a real Prometheus (Debian's) loads prometheus.yml's rules, scrapes both daemons and
#      evaluates every rule without an error, with no alert firing on this healthy service.
set -euo pipefail
out="$TEST_TMPDIR/obs"
rm -rf "$out" && mkdir -p "$out"
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/lib/service.sh"
here="$ws/tests/observability"
check="$here/promql_check.py"
dashboards=("$ws"/deploy/grafana/dashboards/*.json)
alerts="$ws/deploy/prometheus/alerts.yaml"

start_coordinator
start_worker w1 5
start_worker g1 0 --fake-gpus "FakeGPU:1073741824" --trainer "$fake_trainer"

echo "== 1. four jobs: eval + checkpoints, pipeline, NVMe offload, a (fake) GPU"
tail -c 20000 "$text" > "$out/data/val.txt"
mkdir -p "$out/nvme"
$py - "$text" "$out" <<'PY'
import json, sys
text, out = sys.argv[1:]
def job(name, world, model_layers=1, **extra):
    j = {"train_micro_batch_size_per_gpu": 2,
         "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
         "zero_optimization": {"stage": 1},
         "model": {"type": "gpt", "n_layer": model_layers, "n_head": 2, "n_embd": 16,
                   "vocab_size": 256, "block_size": 16},
         "data": {"train": text, "seq_len": 16},
         "job": {"name": name, "world_size": world, "train_steps": 1000000, "eval_every": 0,
                 "sample_tokens": 0, "device": "cpu"}}
    for k, v in extra.items():
        (j["job"] if k in ("checkpoint_dir", "checkpoint_every", "keep_last", "eval_every",
                           "pipeline_stages", "max_restarts") else j)[k] = v
    json.dump(j, open(f"{out}/{name}.json", "w"))
job("main", 2, data={"train": text, "val": f"{out}/data/val.txt", "seq_len": 16},
    eval_every=3, checkpoint_dir=f"{out}/ckpt", checkpoint_every=3, keep_last=2, max_restarts=2)
job("pipe", 2, model_layers=2, pipeline_stages=2)
job("nvme", 1, fp16={"enabled": True},
    zero_optimization={"stage": 1, "offload_optimizer": {"device": "nvme",
                                                         "nvme_path": f"{out}/nvme"}})
# The stand-in trainer reads its mode from the job file: "steps" writes two metrics lines and
# waits. comet.mode is a key without effect in dstrain that carries it through validation.
job("gpu", 1, comet={"mode": "steps"})
g = json.load(open(f"{out}/gpu.json"))
g["job"]["device"] = "cuda"
json.dump(g, open(f"{out}/gpu.json", "w"))
PY
for j in main pipe nvme gpu; do "$dstrain" submit "$out/$j.json" --id "$j" > /dev/null; done

echo "== 2. scrape once every family is there"
wanted_w1=('dstrain_train_val_loss{job_id="main"}' 'dstrain_train_pipeline_bubble_fraction{job_id="pipe"'
  'dstrain_train_nvme_bytes{job_id="nvme"' 'dstrain_train_swap_wait_seconds_total{job_id="nvme"'
  'dstrain_checkpoint_save_duration_seconds_count{job_id="main"}')
wanted_g1=('dstrain_worker_device_memory_bytes{job_id="gpu"')
wanted_coordinator=('dstrain_job_last_checkpoint_timestamp_seconds{job_id="main"}'
  'dstrain_coordinator_worker_heartbeat_age_seconds{worker_id="w1"}')
has_all() {  # file patterns...: every pattern starts a line of the file
  local f=$1
  shift
  for p in "$@"; do grep -qF -- "$p" <(grep -v '^#' "$f") || return 1; done
}
ok=0
for _ in $(seq 600); do
  curl -sf "${worker_metrics[w1]}" > "$out/worker-w1.prom" || true
  curl -sf "${worker_metrics[g1]}" > "$out/worker-g1.prom" || true
  curl -sf "$coord_metrics" > "$out/coordinator.prom" || true
  if has_all "$out/worker-w1.prom" "${wanted_w1[@]}" && has_all "$out/worker-g1.prom" "${wanted_g1[@]}" &&
    has_all "$out/coordinator.prom" "${wanted_coordinator[@]}"; then
    ok=1
    break
  fi
  sleep 0.2
done
if [[ $ok != 1 ]]; then
  for p in "${wanted_w1[@]}"; do has_all "$out/worker-w1.prom" "$p" || echo "w1 lacks $p" >&2; done
  for p in "${wanted_g1[@]}"; do has_all "$out/worker-g1.prom" "$p" || echo "g1 lacks $p" >&2; done
  for p in "${wanted_coordinator[@]}"; do has_all "$out/coordinator.prom" "$p" || echo "coordinator lacks $p" >&2; done
  "$dstrain" list >&2 || true
  fail "not every family showed up within 120 s"
fi
# The coordinator's view of steps trails the trainers' reports by a report or two: give it one.
sleep 1
curl -sf "$coord_metrics" > "$out/coordinator.prom"
echo "families: w1 $(grep -c '^# TYPE' "$out/worker-w1.prom"), g1 $(grep -c '^# TYPE' "$out/worker-g1.prom"), coordinator $(grep -c '^# TYPE' "$out/coordinator.prom")"

echo "== 3. every dashboard and rule expression uses exported names"
scrapes=("$out/coordinator.prom" "$out/worker-w1.prom" "$out/worker-g1.prom")
/usr/bin/python3 "$check" --metrics "${scrapes[@]}" --allow up --rules "$alerts" --dashboards "${dashboards[@]}" \
  --datasource-uid dstrain-prometheus || fail "promql_check"
# A misspelt metric in a dashboard fails, naming the panel and the metric.
$py - "$ws/deploy/grafana/dashboards/dstrain-job.json" "$out/typo.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["uid"] = "typo"
for p in d["panels"]:
    if p.get("title") == "Loss":
        p["targets"][0]["expr"] = p["targets"][0]["expr"].replace("dstrain_train_loss", "dstrain_train_losss")
json.dump(d, open(sys.argv[2], "w"))
PY
if /usr/bin/python3 "$check" --metrics "${scrapes[@]}" --allow up \
  --dashboards "$out/typo.json" 2> "$out/typo.err"; then
  fail "a dashboard with dstrain_train_losss passed the check"
fi
grep -q 'typo.json: panel 10 "Loss" target A: unknown metric dstrain_train_losss' "$out/typo.err" ||
  fail "the misspelt metric's panel is not named: $(cat "$out/typo.err")"

echo "== 4. the coordinator's per-job series"
# Checked to the end: a failure here is reported after section 5 has run too.
per_job=ok
$py - "$out/coordinator.prom" <<'PY' || per_job=failed
import re, sys
v = {}
for line in open(sys.argv[1]):
    m = re.match(r'^(dstrain_job_\w+)\{(.*)\} (\S+)$', line)
    if m:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        v[(m.group(1), labels["job_id"])] = (labels, float(m.group(3)))
problems = []
def expect(name, job, ok, what):
    got = v.get((name, job))
    if got is None or not ok(got[1]):
        problems.append(f"{name}{{job_id={job}}}: {got[1] if got else 'absent'}, want {what}")
for job, world, device in (("main", 2, "cpu"), ("pipe", 2, "cpu"), ("nvme", 1, "cpu"),
                           ("gpu", 1, "cuda")):
    labels = v.get(("dstrain_job_info", job), ({}, 0))[0]
    if (labels.get("state"), labels.get("device")) != ("RUNNING", device):
        problems.append(f"dstrain_job_info{{job_id={job}}}: {labels}, want RUNNING, {device}")
    expect("dstrain_job_world_size", job, lambda x, w=world: x == w, world)
    expect("dstrain_job_queued_seconds", job, lambda x: x == 0, "0 (placed)")
    expect("dstrain_job_train_steps", job, lambda x: x == 1000000, 1000000)
    expect("dstrain_job_restarts", job, lambda x: x == 0, 0)
    expect("dstrain_job_step", job, lambda x: x > 0, "the last step reported (> 0)")
expect("dstrain_job_max_restarts", "main", lambda x: x == 2, 2)
expect("dstrain_job_checkpoint_every_steps", "main", lambda x: x == 3, 3)
expect("dstrain_job_checkpoint_every_steps", "pipe", lambda x: x == 0, "0 (none)")
expect("dstrain_job_last_checkpoint_step", "main", lambda x: x >= 3 and x % 3 == 0,
       "a multiple of 3")
expect("dstrain_job_last_checkpoint_step", "pipe", lambda x: x == 0, "0 (none yet)")
if ("dstrain_job_last_checkpoint_timestamp_seconds", "pipe") in v:
    problems.append("dstrain_job_last_checkpoint_timestamp_seconds{job_id=pipe}: present "
                    "before any checkpoint")
if problems:
    sys.exit("\n".join(problems))
PY

echo "== 5. Prometheus evaluates every rule on the live daemons"
prom_port=$($py -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
mkdir -p "$out/prometheus"
cp "$alerts" "$out/prometheus/alerts.yaml"
$py - "$ws/deploy/prometheus/prometheus.yml" "$out/prometheus/prometheus.yml" \
  "${coord_metrics#http://}" "${worker_metrics[w1]#http://}" "${worker_metrics[g1]#http://}" <<'PY'
import sys, yaml
src, dst, coordinator, *workers = sys.argv[1:]
c = yaml.safe_load(open(src))
c["global"].update(scrape_interval="1s", evaluation_interval="1s")
c.pop("alerting")
targets = {"dstrain-coordinator": [coordinator.replace("/metrics", "")],
           "dstrain-worker": [w.replace("/metrics", "") for w in workers]}
for s in c["scrape_configs"]:
    s["static_configs"] = [{"targets": targets[s["job_name"]]}]
yaml.safe_dump(c, open(dst, "w"))
PY
promtool check config "$out/prometheus/prometheus.yml" > /dev/null
prometheus --config.file="$out/prometheus/prometheus.yml" --storage.tsdb.path="$out/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$out/prometheus.log" 2>&1 &
pids+=("$!")
api="http://127.0.0.1:$prom_port/api/v1"
$py - "$api" <<'PY' || fail "Prometheus rule evaluation"
import json, sys, time, urllib.parse, urllib.request
api = sys.argv[1]
def get(path, **q):
    url = f"{api}/{path}" + ("?" + urllib.parse.urlencode(q) if q else "")
    return json.load(urllib.request.urlopen(url, timeout=5))["data"]
deadline = time.time() + 60
while True:
    try:
        groups = get("rules")["groups"]
        up = get("query", query="sum(up)")["result"]
        fits = get("query", query='dstrain:job_usable_free_slots{job_id="main"}')["result"]
        rules = [r for g in groups for r in g["rules"]]
        evaluated = rules and all(r.get("lastEvaluation", "").startswith("2") and
                                  not r["lastEvaluation"].startswith("0001") for r in rules)
        if up and float(up[0]["value"][1]) == 3 and evaluated and fits:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("Prometheus did not scrape the 3 daemons and evaluate every rule in 60 s")
    time.sleep(0.5)
time.sleep(3)  # a few more evaluations on live data
rules = [r for g in get("rules")["groups"] for r in g["rules"]]
bad = [f'{r["name"]}: {r["health"]}: {r.get("lastError", "")}' for r in rules
       if r["health"] != "ok"]
alerts = get("alerts")["alerts"]
firing = [f'{a["labels"]["alertname"]} {a["labels"]}' for a in alerts if a["state"] == "firing"]
print(f"{len(rules)} rules evaluated; alerts: "
      f"{[(a['labels']['alertname'], a['state']) for a in alerts] or 'none'}")
# Every slot, CPU and GPU, holds a rank: nothing free for any job.
free = get("query", query="dstrain:job_usable_free_slots")["result"]
values = {s["metric"]["job_id"]: float(s["value"][1]) for s in free}
if values != {"main": 0.0, "pipe": 0.0, "nvme": 0.0, "gpu": 0.0}:
    bad.append(f"dstrain:job_usable_free_slots: {values}, want 0 for each job")
sys.exit("\n".join(bad + [f"firing on a healthy service: {f}" for f in firing]) or None)
PY

for j in main pipe nvme gpu; do "$dstrain" cancel "$j" > /dev/null; done
[[ $per_job == ok ]] || fail "the coordinator's per-job series (section 4)"
echo "PASS"

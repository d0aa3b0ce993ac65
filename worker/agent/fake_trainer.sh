#!/usr/bin/env bash
# A stand-in trainer for the agent's tests (and for the service tests' GPU workers, on machines
# without GPUs). The agent runs it as
#   fake_trainer.sh train DIR/job.json --rank R ... --device D [--metrics-out FILE]
# It writes its argv (one per line) to DIR/argv.txt, its pid to DIR/pid and the
# CUDA_VISIBLE_DEVICES it got ("<unset>" when it got none) to DIR/cuda_visible_devices.txt,
# appends "spawned" to DIR/../spawns.txt, then acts on {"mode": M, "code": C} in job.json (a job
# without a mode, such as a real job spec, is "ok"):
#   ok         print "rank R device D CUDA_VISIBLE_DEVICES=V" and more output (stdout and
#              stderr), write two metrics lines when --metrics-out is given (on --device cuda
#              with the device memory keys), exit C
#   steps      as ok up to the metrics lines, then print "ready", wait until DIR/go exists, exit C
#   sleep      print "ready", then wait to be stopped (SIGTERM ends it, exit 143; SIGUSR1, a
#              drain request, exit 201 as the real trainer after its checkpoint)
#   stubborn   print "ready" and ignore SIGTERM (only SIGKILL ends it)
#   waitfile   print "ready", wait until DIR/go exists, print a line, exit C
#   chatty     print "ready", wait until DIR/go exists, print 1000 lines, exit C
job=$2
dir=$(dirname "$job")
printf '%s\n' "$0" "$@" > "$dir/argv.txt"
echo $$ > "$dir/pid"
visible=${CUDA_VISIBLE_DEVICES-<unset>}
echo "$visible" > "$dir/cuda_visible_devices.txt"
echo spawned >> "$dir/../spawns.txt"
metrics=""
rank=-1
device=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --metrics-out) metrics=$2; shift 2 ;;
    --rank) rank=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    *) shift ;;
  esac
done
mode=$(sed -n 's/.*"mode": *"\([a-z]*\)".*/\1/p' "$job")
mode=${mode:-ok}
code=$(sed -n 's/.*"code": *\([0-9]*\).*/\1/p' "$job")
code=${code:-0}
case $mode in
  ok | steps)
    echo "rank $rank device $device CUDA_VISIBLE_DEVICES=$visible"
    echo "hello from rank $rank"
    echo "warning from rank $rank" >&2
    if [[ -n $metrics ]]; then
      gpu_memory=""
      [[ $device == cuda ]] && gpu_memory=',"device_mem_bytes":1073741824,"device_mem_peak_bytes":2147483648'
      echo '{"step":1,"loss":2.5,"lr":0.001,"grad_norm":1.25,"tokens_per_s":1000,"step_ms":250,"loss_scale":1,"skipped":false,"mem_bytes":{"params":100,"grads":50},"comm_bytes":4096'"$gpu_memory"'}' >> "$metrics"
      echo '{"step":2,"loss":2.25,"lr":0.002,"grad_norm":null,"tokens_per_s":2000,"step_ms":125,"loss_scale":0.5,"skipped":true,"mem_bytes":{"params":100,"grads":60},"comm_bytes":1000,"val_loss":2.75}' >> "$metrics"
    fi
    if [[ $mode == steps ]]; then
      echo "ready"
      while [[ ! -e $dir/go ]]; do sleep 0.05; done
    fi
    sleep 0.3
    echo "last words of rank $rank"
    exit "$code"
    ;;
  sleep)
    trap 'echo "rank $rank got SIGTERM"; exit 143' TERM
    trap 'echo "rank $rank drained"; exit 201' USR1
    echo "ready"
    while true; do sleep 0.05; done
    ;;
  stubborn)
    trap '' TERM
    echo "ready"
    while true; do sleep 0.05; done
    ;;
  waitfile)
    echo "ready"
    while [[ ! -e $dir/go ]]; do sleep 0.05; done
    echo "exiting with $code"
    exit "$code"
    ;;
  chatty)
    echo "ready"
    while [[ ! -e $dir/go ]]; do sleep 0.05; done
    for ((i = 0; i < 1000; i++)); do echo "line $i of some chatty output"; done
    exit "$code"
    ;;
  *)
    echo "unknown mode '$mode'" >&2
    exit 2
    ;;
esac

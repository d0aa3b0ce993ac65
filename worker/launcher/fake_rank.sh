#!/usr/bin/env bash
# A stand-in trainer for launcher_test. Arguments: MODE, then what the launcher appends
# (--rank R --world N --store HOST:PORT --threads T). Modes:
#   ok        print two lines (one on stderr) and exit 0
#   fail1     rank 1 exits 3 after a moment; the others wait to be stopped
#   kill0     rank 0 kills itself with SIGKILL; the others wait
#   sleep     every rank sleeps until stopped (for the Ctrl-C test)
#   args      print the arguments
#   env       print the arguments and the rank's place from the environment (LaunchOptions::rank_env)
mode=$1
shift
args="$*"
rank=-1
while [[ $# -gt 0 ]]; do
  case $1 in
    --rank) rank=$2; shift 2 ;;
    *) shift ;;
  esac
done
case $mode in
  ok) echo "hello from $rank"; echo "warning from $rank" >&2; printf 'no newline %s' "$rank"; exit 0 ;;
  fail1) if [[ $rank == 1 ]]; then sleep 0.3; echo "rank 1 gives up"; exit 3; fi; sleep 60 ;;
  kill0) if [[ $rank == 0 ]]; then sleep 0.3; kill -9 $$; fi; sleep 60 ;;
  sleep) echo "ready $rank"; sleep 60 ;;
  env) echo "args=$args RANK=$RANK WORLD_SIZE=$WORLD_SIZE LOCAL_RANK=$LOCAL_RANK" \
         "LOCAL_WORLD_SIZE=$LOCAL_WORLD_SIZE STORE=$DSTRAIN_STORE THREADS=$DSTRAIN_THREADS" \
         "OMP=$OMP_NUM_THREADS KEPT=$DSTRAIN_LAUNCHER_TEST_KEPT" ;;
esac

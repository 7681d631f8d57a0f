#!/bin/bash
# Flood test (issue 9): 1000 subscribers at 20 ev/s from publisher A (token "legit"), once
# alone and once while publisher B (token "flooder") sends as fast as 4 connections allow.
# The broker runs with a publish rate limit per token. Prints the subscribers' latency for both.
# Usage: bash load/flood.sh   (needs make -C load; about 1 minute; loopback only)
cd "$(dirname "$0")/.."
SECRET=flood-test-secret-that-is-32-bytes-long
tok() { .venv/bin/python -c "import jwt,time,sys;print(jwt.encode({'sub':sys.argv[1],'publish':['**'],'exp':time.time()+3600},'$SECRET',algorithm='HS256'))" $1; }
A=$(tok legit); B=$(tok flooder)
run() {
  BROKER_AUTH_SECRET=$SECRET BROKER_LIMITS_PUBLISH_RATE=25 BROKER_LIMITS_PUBLISH_BURST=5 BROKER_LOG_LEVEL=warning \
    .venv/bin/python -m broker run --port 18666 2>/dev/null & BPID=$!
  sleep 2
  load/build/ssesub --port 18666 --path /topics/f/events -n 1000 --expect 200 --duration 30 --hold > /tmp/flood-sub_$1.json &
  SPID=$!
  sleep 4
  if [ "$1" = flood ]; then
    load/build/pubload --port 18666 --path /topics/f -k 4 -m 10000000 --duration 13 --header "Authorization: Bearer $B" > /tmp/flood-flood_$1.json &
  fi
  load/build/pubload --port 18666 --path /topics/f -k 1 -m 200 --rate 20 --duration 12 --header "Authorization: Bearer $A" > /tmp/flood-pub_$1.json
  wait $SPID
  kill %1 2>/dev/null; wait 2>/dev/null
}
run base; run flood
for r in base flood; do python3 -c "
import json,sys; s=json.load(open('/tmp/flood-sub_$r.json')); p=json.load(open('/tmp/flood-pub_$r.json'))
print('$r', 'events', s.get('events_total', s.get('events')), 'lat', s.get('latency_ms'), 'pub accepted', p['accepted'])"; done
python3 -c "import json; f=json.load(open('/tmp/flood-flood_flood.json')); print('flood', f['requests_per_s'], f['rejected'])"

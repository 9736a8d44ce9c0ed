"""E2E client: unmodified boto3. Prints GetCallerIdentity as JSON, with the time each answer came
(`At`, Unix seconds); `--loop N` repeats every second for N seconds and exits 0 only if every call
succeeded."""
import json
import sys
import time

import boto3

loop_for = int(sys.argv[sys.argv.index("--loop") + 1]) if "--loop" in sys.argv else 0
sts = boto3.client("sts")
start = time.time()
while True:
    out = sts.get_caller_identity()
    print(json.dumps({"Arn": out["Arn"], "Account": out["Account"], "At": round(time.time(), 3)}), flush=True)
    if time.time() - start >= loop_for:
        break
    time.sleep(1)

"""Micro-benchmark of host services as a plugin sees them: ns per `host.call` round trip,
in-memory `host.kv.get`, and `host.log`, measured inside a handler of the embed example.

    python3 bench/host_calls.py [--bin target/release/embed-example] [--n 200000]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "bench" / "apps" / "hostcalls" / "pyhost.toml"
VENV = REPO / "bench" / ".venv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=str(REPO / "target" / "release" / "embed-example"))
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    venv = VENV if VENV.exists() else REPO / ".venv"
    env = dict(os.environ, VIRTUAL_ENV=str(venv))
    command = [args.bin, "--config", str(CONFIG), "--listen", "127.0.0.1:0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"listening on (http://\S+)", line)
        if match is None:
            proc.terminate()
            print(f"the server did not start: {line!r}", file=sys.stderr)
            return 1
        try:
            with urllib.request.urlopen(f"{match.group(1)}/micro?n={args.n}", timeout=120) as r:
                figures = json.load(r)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    print(f"{'host service':<26}{'SDK (built-in path)':>20}{'C table via cffi':>18}")
    for key, label in [
        ("call_noop_ns", "host.call('noop')"),
        ("kv_get_ns", "host.kv.get (memory)"),
        ("log_ns", "host.log (filtered out)"),
    ]:
        print(f"{label:<26}{figures[key]:>17.0f} ns{figures['abi_' + key]:>15.0f} ns")
    print(f"(empty loop {figures['empty_loop_ns']:.0f} ns subtracted; best of 5 x {args.n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

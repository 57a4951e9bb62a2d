"""A fake OpenAI server on a fake GPU: `python -m tests.fakes.gpu_server PORT STATE_FILE` reads the power
limit the fake NVML keeps in STATE_FILE (tests/fakes/site/pynvml.py) when it starts, and streams tokens
slower under a lower limit — 4 ms a token at 700 W, 700/limit times that below — as a power-capped GPU
decodes slower. With no state file it runs at 700 W."""

import json
import os
import sys

from tests.fakes.openai_server import FakeOpenAI

if __name__ == "__main__":
    port, state = int(sys.argv[1]), sys.argv[2]
    limit_w = 700.0
    if os.path.exists(state):
        with open(state) as f:
            limit_w = min(g["power_limit_mw"] for g in json.load(f).values()) / 1000
    server = FakeOpenAI(port=port, itl_s=0.004 * 700.0 / limit_w)
    print(f"fake GPU server at {limit_w:g} W", flush=True)
    server.thread.start()
    server.thread.join()

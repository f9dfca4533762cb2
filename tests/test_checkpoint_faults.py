"""Fault injection: a process killed (SIGKILL) at random points of checkpoint saves, many times.
The last completed checkpoint always loads, and no temporary file survives the next save."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from backprop_gpu.app import checkpoint

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from backprop_gpu.app import checkpoint
    path, start = sys.argv[1], int(sys.argv[2])
    big = np.random.default_rng(0).standard_normal(4_000_000).astype(np.float32)  # 16 MB: writes take a while
    for n in range(start, start + 10_000):
        print("begin", n, flush=True)
        checkpoint.save(path, {"w": big + n}, {"format": checkpoint.FORMAT, "n": n})
        print("done", n, flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_saves_never_leave_a_damaged_checkpoint_or_temp_files(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "last.safetensors"
    last_done, mid_write = -1, 0
    for round_ in range(8):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(last_done + 1)],
                                 stdout=subprocess.PIPE, text=True)
        seen_done = last_done
        # the first round waits for one save to complete; later rounds kill at a random point of a
        # random save: right after it began (mid-write), or some time into the loop
        wanted_begins = 1 + rng.randrange(3)
        begins = 0
        for line in child.stdout:
            kind, n = line.split()
            if kind == "done":
                seen_done = int(n)
            elif kind == "begin":
                begins += 1
                if begins >= wanted_begins and (round_ or seen_done >= 0):
                    time.sleep(rng.uniform(0.0, 0.03))
                    break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        temps = list(tmp_path.glob(".*.tmp"))
        mid_write += bool(temps)
        tensors, meta = checkpoint.load(path)  # never damaged: the last completed save, or a later one
        n = meta["n"]
        assert n >= seen_done >= 0
        np.testing.assert_array_equal(tensors["w"][:3], np.random.default_rng(0).standard_normal(3)
                                      .astype(np.float32) + np.float32(n))
        last_done = n
    assert mid_write >= 1, "no kill landed during a write: the test did not inject the fault it is about"
    checkpoint.save(path, {"w": np.zeros(2, np.float32)}, {"format": checkpoint.FORMAT, "n": -1})  # the next save clears the debris
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
    assert os.path.getsize(path) > 0

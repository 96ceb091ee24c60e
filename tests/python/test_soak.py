"""Soak: many short epochs with the process's resident memory sampled at each epoch's end, which
must not grow once the run is warm; and the prefetching threads (data workers) never hang a
process, whether a run stops early, a callback raises in the middle of a batch, or the
interpreter exits with batches still in flight. Each of these runs in a child process with a
time limit, so a deadlock fails the test instead of hanging the suite.

CONVNET_SOAK_EPOCHS=N sets the soak's length (default 60 epochs, under a minute;
docs/RELIABILITY.md records a longer run)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EPOCHS = int(os.environ.get("CONVNET_SOAK_EPOCHS", "60"))

# A batch of 128 16x16 images is 128 KiB: a leak of one batch per step would add about 1 MiB
# an epoch (8 steps), one per epoch 128 KiB an epoch; the limit below is 8 MiB over the run.
COMMON = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import convnet
    model = json.loads(Path(sys.argv[1]).read_text())
    DATA = "generated[count=1024;classes=4;channels=1;size=16;seed=3]"

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    """)


def run_child(body: str, *args, timeout=300):
    script = COMMON + textwrap.dedent(body)
    model = REPO / "tests" / "data" / "dropout_net_16.json"
    return subprocess.run([sys.executable, "-c", script, str(model), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_resident_memory_does_not_grow_over_many_epochs(tmp_path):
    r = run_child("""
        class Sampler(convnet.Callback):
            def __init__(self):
                self.rss = []
            def on_epoch(self, e):
                self.rss.append(rss_mib())
        s = Sampler()
        convnet.train(json.dumps(model), DATA, epochs=int(sys.argv[2]), batch=128, save_dir=sys.argv[3], keep=2,
                      workers=3, callbacks=[s], progress=False)
        print(json.dumps(s.rss))
        """, str(EPOCHS), str(tmp_path / "run"), timeout=900)
    assert r.returncode == 0, r.stderr
    rss = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(rss) == EPOCHS
    warm = max(rss[5:10])  # the allocators have their working set by then
    growth = max(rss[10:]) - warm
    print(f"resident memory over {EPOCHS} epochs: {rss[0]:.1f} MiB after the first, {warm:.1f} warm, "
          f"{max(rss):.1f} at most, growth {growth:+.2f} MiB")
    assert growth < 8, rss


def test_an_early_stop_or_a_raising_callback_does_not_hang_the_prefetch_threads(tmp_path):
    r = run_child("""
        class StopAt(convnet.Callback):
            def __init__(self, step, stop):
                self.step, self.stop, self.seen = step, stop, 0
            def on_batch(self, e):
                self.seen += 1
                if self.seen == self.step:
                    if self.stop == "raise":
                        raise KeyError("from the callback")
                    return False
        out = Path(sys.argv[2])
        # An early stop mid-epoch with 4 workers prefetching: the run returns, stopped.
        net, result = convnet.train(json.dumps(model), DATA, epochs=5, batch=32, workers=4, save_dir=str(out / "a"),
                                    callbacks=[StopAt(5, "stop")], progress=False)
        print("stopped", result["stopped"], result["step"])
        # A callback that raises: the exception comes through, the threads wind down.
        try:
            convnet.train(json.dumps(model), DATA, epochs=5, batch=32, workers=4, save_dir=str(out / "b"),
                          callbacks=[StopAt(3, "raise")], progress=False)
        except KeyError as e:
            print("raised", e)
        # Then another run in the same process works.
        net, result = convnet.train(json.dumps(model), DATA, epochs=1, batch=32, workers=4, save_dir=str(out / "c"),
                                    progress=False)
        print("after", result["step"])
        """, str(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "stopped True 5" in r.stdout, r.stdout
    assert "raised 'from the callback'" in r.stdout, r.stdout
    assert "after 32" in r.stdout, r.stdout


def test_exiting_with_batches_in_flight_does_not_hang():
    r = run_child("""
        train, test = convnet.DataPrep(DATA).pipelines(batch=16, workers=4)
        batches = train.epoch()
        next(batches)  # the workers are now filling the queue
        print("leaving", flush=True)
        sys.exit(0)
        """, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "leaving" in r.stdout

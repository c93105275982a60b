"""Run by the sharding tests under torchrun: inference.py or tools/extract_faces.py as their command
lines run them.

    RECCE_TEST_KILL=<rank>:<n> torchrun ... shard_worker.py inference|extract ARGS...

With RECCE_TEST_KILL set, that rank kills itself (SIGKILL, no clean-up) right after its n-th
finished input (a scored row kept in its part, a video extracted): a rank lost mid-run.
"""
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

what, argv = sys.argv[1], sys.argv[2:]
kill = os.environ.get("RECCE_TEST_KILL")
if kill and int(os.environ.get("RANK", "0")) == int(kill.split(":")[0]):
    after, done = int(kill.split(":")[1]), []

    def counted(original):
        def run(*args):
            result = original(*args)
            done.append(1)
            if len(done) >= after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return run
    import faces.shard
    faces.shard.FLUSH_ROWS = 1  # every row kept at once: the rerun sees what was done
    if what == "inference":
        faces.shard.Parts.add = counted(faces.shard.Parts.add)
    else:
        import faces.extract
        faces.extract.process_video = counted(faces.extract.process_video)

from faces.shard import exit_process

if what == "inference":
    import inference
    exit_process(inference.main(argv))
from tools import extract_faces

exit_process(extract_faces.main(argv))

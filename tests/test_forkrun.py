"""The tests' runner of commands (tests/forkrun.py) gives what a fresh interpreter gives."""
import os
import subprocess
import time

import forkrun
import pytest

from helpers import ROOT, cli

pytestmark = pytest.mark.skipif(not forkrun.ENABLED, reason="commands run in fresh interpreters")


@pytest.mark.slow
def test_a_forked_command_equals_a_fresh_interpreter(tmp_path):
    """Exit code, both streams, the script's folder first on sys.path, atexit and threads; a
    failed check, an unhandled error and a SystemExit with a message."""
    script = tmp_path / "s.py"
    script.write_text(
        "import atexit, os, sys, threading\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "threading.Timer(0.2, lambda: print('thread ran')).start()\n"
        "print(sys.argv[1:], sys.path[0] == os.path.dirname(os.path.abspath(__file__)),"
        " os.getcwd(), 'plugin' in sys.modules, os.environ.get('FORKRUN_TEST'))\n"
        "import plugin\n"
        "print(sys.stdin.read() or 'no input', file=sys.stderr)\n"
        "if sys.argv[1] == 'raise': raise ValueError('bad')\n"
        "if sys.argv[1] == 'message': sys.exit('a message')\n"
        "sys.exit(int(sys.argv[1]))\n")
    (tmp_path / "plugin.py").write_text("")
    for args in (["0"], ["3"], ["raise"], ["message"]):
        forked = cli([str(script)] + args, timeout=60)
        fresh = cli([str(script)] + args, timeout=60, fresh=True)
        assert forked.returncode == fresh.returncode and forked.stdout == fresh.stdout
        assert forked.stderr == fresh.stderr
    assert "atexit ran" in forked.stdout and "thread ran" in forked.stdout
    assert f"['message'] True {ROOT} False" in forked.stdout  # the plugin of the last run is gone
    assert forked.returncode == 1 and "a message" in forked.stderr
    assert cli([str(script), "0"], input="given").stderr == "given\n"


@pytest.mark.slow
def test_a_command_past_its_time_is_killed_with_its_workers(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import subprocess, sys, time\n"
                      "w = subprocess.Popen([sys.executable, '-c',"
                      " 'import time; time.sleep(60)'])\n"
                      f"open({str(tmp_path / 'pid')!r}, 'w').write(str(w.pid))\n"
                      "time.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        cli([str(script)], timeout=2)
    stat = f"/proc/{(tmp_path / 'pid').read_text()}/stat"
    deadline = time.monotonic() + 30
    while os.path.exists(stat) and open(stat).read().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, "the command's worker still runs"
        time.sleep(0.1)
    (tmp_path / "after.py").write_text("print('the next command runs')\n")
    assert cli([str(tmp_path / "after.py")]).stdout == "the next command runs\n"

"""The tests' runner of commands (tests/forkrun.py) gives what a fresh interpreter gives."""
import os
import signal
import subprocess
import sys
import time

import forkrun
import pytest

from helpers import ROOT, cli

pytestmark = pytest.mark.skipif(not forkrun.ENABLED, reason="commands run in fresh interpreters")


def _pid_in(path, deadline):
    """The process id a command wrote to ``path``, once it is there."""
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"no process id in {path}"
        time.sleep(0.05)
    return int(path.read_text())


def _ends(pid, deadline, what):
    """Waits until process ``pid`` has ended (gone, or a zombie its parent has yet to reap)."""
    stat = f"/proc/{pid}/stat"
    while os.path.exists(stat) and open(stat).read().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, f"{what} still runs"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_forked_command_equals_a_fresh_interpreter(tmp_path):
    """Exit code, both streams, the script's folder first on sys.path, atexit and threads; a
    failed check, an unhandled error, an uncaught Ctrl-C (the interpreter ends killed by SIGINT)
    and a SystemExit with a message."""
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
        "if sys.argv[1] == 'interrupt': raise KeyboardInterrupt\n"
        "if sys.argv[1] == 'message': sys.exit('a message')\n"
        "sys.exit(int(sys.argv[1]))\n")
    (tmp_path / "plugin.py").write_text("")
    codes = []
    for args in (["0"], ["3"], ["raise"], ["interrupt"], ["message"]):
        forked = cli([str(script)] + args, timeout=60)
        fresh = cli([str(script)] + args, timeout=60, fresh=True)
        assert forked.returncode == fresh.returncode and forked.stdout == fresh.stdout
        assert forked.stderr == fresh.stderr
        codes.append(forked.returncode)
    assert codes == [0, 3, 1, -signal.SIGINT, 1]
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
    _ends(int((tmp_path / "pid").read_text()), time.monotonic() + 30, "the command's worker")
    (tmp_path / "after.py").write_text("print('the next command runs')\n")
    assert cli([str(tmp_path / "after.py")]).stdout == "the next command runs\n"


def test_python_dash_m_as_a_fresh_interpreter_runs_it(tmp_path):
    (tmp_path / "modx.py").write_text("import os, sys\n"
                                      "print(sys.argv, sys.path[0] == os.getcwd(), __name__)\n"
                                      "sys.exit(4)\n")
    forked = forkrun.SERVER_PROCESS.run(["-m", "modx", "a", "b"], tmp_path, timeout=60)
    fresh = subprocess.run([sys.executable, "-m", "modx", "a", "b"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert (forked.returncode, forked.stdout, forked.stderr) == \
        (fresh.returncode, fresh.stdout, fresh.stderr) == \
        (4, f"[{str(tmp_path / 'modx.py')!r}, 'a', 'b'] True __main__\n", "")


def test_each_command_starts_with_seeds_of_its_own_and_its_omp_num_threads(tmp_path):
    """What a fresh interpreter reads as it starts: its random seeds (numpy's and torch's), and
    OMP_NUM_THREADS, which OpenMP read once when the server imported torch."""
    script = tmp_path / "r.py"
    script.write_text("import numpy, torch\n"
                      "print(numpy.random.randint(1 << 30), torch.initial_seed(),"
                      " torch.get_num_threads())\n")
    runs = [forkrun.SERVER_PROCESS.run([str(script)], tmp_path, timeout=60,
                                       env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
            for _ in range(2)]
    assert runs[0][2] == runs[1][2] == "1"
    assert runs[0][0] != runs[1][0] and runs[0][1] != runs[1][1]


def _sleeper(tmp_path):
    """A script that writes its process id to ``tmp_path / "pid"``, then sleeps a minute."""
    script = tmp_path / "w.py"
    script.write_text("import os, time\n"
                      f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
                      "time.sleep(60)\n")
    return script


def _stand_in(script, *args, relay=True):
    env = {**os.environ, "FORKRUN_TEST": "seen"}
    env.pop("PYTHONUNBUFFERED", None)  # python -u is the stand-in's to give
    if relay:
        env["RECCE_TESTS_RELAY"] = forkrun.SERVER_PROCESS.relay()
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "forked_worker.py"),
                             str(script), *args], cwd=script.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_stand_in_ends_as_its_command_and_passes_on_signals(tmp_path):
    """What torchrun sees of a worker run through tests/forked_worker.py: its output, exit
    status, a signal it was sent, the signal that killed it; and without the relay the command
    itself, as torchrun runs it (python -u)."""
    script = tmp_path / "w.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "print('out', os.environ['FORKRUN_TEST'], os.getcwd(), sys.stdout.write_through)\n"
        "print('err', file=sys.stderr)\n"
        "if sys.argv[1] == 'term':\n"
        "    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
        f"    open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if sys.argv[1] == 'kill': os.kill(os.getpid(), signal.SIGKILL)\n"
        "sys.exit(int(sys.argv[1]))\n")
    for relay in (True, False):
        proc = _stand_in(script, "5", relay=relay)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out, err) == (5, f"out seen {tmp_path} True\n", "err\n")
    proc = _stand_in(script, "kill")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    proc = _stand_in(script, "term")
    assert _pid_in(tmp_path / "pid", time.monotonic() + 60) != proc.pid  # forked by the server
    proc.terminate()
    assert proc.communicate(timeout=60)[0].startswith("out") and proc.returncode == 3


def test_a_stand_in_killed_takes_its_command_with_it(tmp_path):
    script = _sleeper(tmp_path)
    proc = _stand_in(script)
    deadline = time.monotonic() + 60
    command = _pid_in(tmp_path / "pid", deadline)
    proc.kill()
    proc.communicate(timeout=60)
    _ends(command, deadline, "the command")


def test_a_stand_in_whose_launcher_is_killed_kills_its_command(tmp_path):
    """A torchrun launch killed past its time: its workers' stand-ins see their parent go and
    kill their commands (nothing keeps the launch's output open)."""
    script = _sleeper(tmp_path)
    env = {**os.environ, "RECCE_TESTS_RELAY": forkrun.SERVER_PROCESS.relay()}
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]);"
         " time.sleep(60)", sys.executable, os.path.join(ROOT, "tests", "forked_worker.py"),
         str(script)], env=env)
    deadline = time.monotonic() + 60
    command = _pid_in(tmp_path / "pid", deadline)
    launcher.kill()
    launcher.wait()
    _ends(command, deadline, "the command")

"""README.md and docs/*.md as a user reads them: every relative link and #anchor points to a file
and a heading that exist, every `python <script>.py ...` command names a script that exists with
flags that its --help lists, the cheap commands run as written, and every Python and YAML block
parses."""
import ast
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

from helpers import ROOT, cli

DOCS = ["README.md"] + sorted(os.path.join("docs", f)
                              for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
FENCE = re.compile(r"^([ \t]*)```(\S*)[^\n]*\n(.*?)^\1```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SHELL = {"", "bash", "sh", "shell", "console"}
# Commands run as written (cwd: the repository root), each well under 10 s; the slow ones are
# marked. Each must appear in the docs (so that this list follows them).
CHEAP = ["python tools/weights.py --list"]
SLOW = ["python tools/reproduce.py --list"]


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return fh.read()


def blocks(text):
    """(language, body) of every fenced block."""
    return [(m.group(2).lower(), m.group(3)) for m in FENCE.finditer(text)]


def prose(text):
    """The text outside fenced blocks and inline code spans (where a link or heading can be)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(rel):
    seen, out = {}, set()
    for line in FENCE.sub("", read(rel)).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


TEST_COMMAND = "pip install -r requirements-dev.txt && ruff check . && python -m pytest -q"


def test_ci_runs_the_readme_test_command_lint_first():
    """.ci/run installs, then runs the README's test command's steps in its order."""
    steps = [ln.strip() for ln in read(".ci/run").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert steps[-2:] == TEST_COMMAND.split(" && ")[1:]
    assert "python -m pip install -q -r requirements-dev.txt" in steps


def test_the_readme_is_a_front_door():
    text = read("README.md")
    assert len(text.splitlines()) <= 350
    for line in ("pip install -r requirements.txt && python train.py",
                 TEST_COMMAND):
        assert any(line == ln.strip() for _, body in blocks(text) for ln in body.splitlines()), line
    linked = {os.path.normpath(t.split("#")[0]) for t in LINK.findall(prose(text))}
    for rel in DOCS[1:]:
        assert rel in linked, f"README.md does not link {rel}"


@pytest.mark.parametrize("rel", DOCS)
def test_every_relative_link_and_anchor_resolves(rel):
    targets = LINK.findall(prose(read(rel)))
    bad = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(rel), path)) if path else rel
        if not os.path.exists(os.path.join(ROOT, dest)):
            bad.append(f"{target}: no file {dest}")
        elif anchor and (not dest.endswith(".md") or anchor not in anchors(dest)):
            bad.append(f"{target}: no heading #{anchor} in {dest}")
    assert not bad, f"{rel}: " + "; ".join(bad)


def test_the_link_checker_sees_a_broken_link():
    """The checker itself: a missing file and a missing heading are both caught."""
    assert slug("Differences from the original release") == "differences-from-the-original-release"
    assert slug("DeepfakeBench's table") == "deepfakebenchs-table"
    assert slug("`ema` and `clip_grad_norm`") == "ema-and-clip_grad_norm"
    assert "the-model-section" in anchors("docs/training.md")
    assert "no-such-heading" not in anchors("docs/training.md")
    assert LINK.findall("see [a](docs/x.md#y) and ![p](docs/p.png)") == \
        ["docs/x.md#y", "docs/p.png"]


def shell_commands(text):
    """Every shell line of the fenced shell blocks, continuation lines joined and the block's
    simple variables (FF=data/x) expanded, then every command quoted inline in the text."""
    out = []
    for lang, body in blocks(text):
        if lang not in SHELL:
            continue
        env = {}
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            if words and all(re.match(r"[A-Z_][A-Z0-9_]*=", w) for w in words):
                for w in words:  # left to right, as the shell assigns them
                    name, value = w.split("=", 1)
                    env[name] = expand(value, env)
                continue
            out.append(" ".join(expand(line, env).split()))
    # and the commands quoted in the text (`python tools/weights.py --check FILE`)
    quoted = re.findall(r"`((?:python|torchrun) [^`]*?\.py\b[^`]*)`", FENCE.sub("", text))
    out += [" ".join(c.split()) for c in quoted]
    return out


def expand(text, env):
    for name in sorted(env, key=len, reverse=True):
        text = text.replace("$" + name, env[name])
    return text


def script_calls(text):
    """(script, arguments, the command) of every `python X.py ...`, `torchrun ... X.py ...` and
    `python -m torch.distributed.launch ... X.py ...` line."""
    calls = []
    for line in shell_commands(text):
        words = [w.strip("[]") for w in shlex.split(line, comments=True)]
        if not words or words[0] not in ("python", "torchrun"):
            continue
        if (words[0] == "python" and words[1:2] == ["-m"]
                and words[2:3] != ["torch.distributed.launch"]):
            continue  # python -m pytest
        at = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
        assert at is not None, f"no script in: {line}"
        calls.append((words[at], [w for w in words[at + 1:] if w], line))
    return calls


ALL_CALLS = [(rel, *call) for rel in DOCS for call in script_calls(read(rel))]


def flags_of(help_text):
    """The option strings of an argparse --help: the usage lines and the option lines."""
    usage, _, rest = help_text.partition("\n\n")
    found = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
    for line in rest.splitlines():
        if re.match(r"\s{1,4}-", line):
            head = re.split(r"\s{2,}", line.strip())[0]
            found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", head))
    return found


def subcommands(help_text):
    """The sub-command names of a parser with sub-parsers (`{a,b} ...` in its usage)."""
    usage = help_text.partition("\n\n")[0]
    m = re.search(r"\{([\w,.-]+)\}\s*\.\.\.", usage)
    return m.group(1).split(",") if m else []


@pytest.fixture(scope="module")
def helps():
    """The --help of every script the docs run, and `<script> <word> --help` where a command's
    first argument is a word (a sub-command, if the script has sub-commands)."""
    words = {}
    for _, script, args, _ in ALL_CALLS:
        if os.path.isfile(os.path.join(ROOT, script)):
            words.setdefault(script, {""})
            if args and re.fullmatch(r"[a-z_]+", args[0]):
                words[script].add(args[0])
    out = {}
    for script in sorted(words):
        for word in sorted(words[script]):
            proc = cli([script] + ([word] if word else []) + ["--help"], timeout=120)
            assert proc.returncode == 0, \
                f"python {script} {word} --help: exit {proc.returncode}\n{proc.stderr[-2000:]}"
            out[(script, word)] = proc.stdout
    return out


def test_the_docs_have_commands():
    scripts = {s for _, s, _, _ in ALL_CALLS}
    for s in ("train.py", "test.py", "inference.py", "tools/reproduce.py", "tools/robustness.py",
              "tools/export.py", "tools/extract_faces.py", "tools/build_index.py"):
        assert s in scripts, f"no command runs {s}"


def test_every_command_names_a_script_and_flags_it_has(helps):
    bad = []
    for rel, script, args, line in ALL_CALLS:
        if not os.path.isfile(os.path.join(ROOT, script)):
            bad.append(f"{rel}: {script} does not exist: {line}")
            continue
        text = helps[(script, "")]
        subs = subcommands(text)
        if subs:
            if not args or args[0] not in subs:
                bad.append(f"{rel}: {script} needs one of {subs}: {line}")
                continue
            text = helps[(script, args[0])]
        else:
            # an optional positional with choices (tools/benchmark.py's table)
            choices = re.search(r"\[?\{([\w,.-]+)\}\]?\s*$", text.partition("\n\n")[0])
            if choices and args and not args[0].startswith("-") and \
                    args[0] not in choices.group(1).split(","):
                bad.append(f"{rel}: {script}: {args[0]!r} is not one of {{{choices.group(1)}}}")
        known = flags_of(text)
        for arg in args:
            if re.match(r"--?[A-Za-z]", arg):
                flag = arg.split("=", 1)[0]
                if flag not in known:
                    bad.append(f"{rel}: {script} has no {flag}: {line}")
    assert not bad, "\n".join(bad)


def test_the_flag_check_catches_a_wrong_flag(helps):
    """The checker itself: a flag the script lacks and a bad sub-command are caught."""
    known = flags_of(helps[("inference.py", "")])
    assert {"--bin", "-b", "--image_folder", "-f", "--video", "--threshold_from"} <= known
    assert "--no-such-flag" not in known and "--ckpt" not in known
    assert subcommands(helps[("tools/build_index.py", "")]) == \
        ["faceforensics", "celebdf", "wilddeepfake", "dfdc"]
    calls = script_calls(
        "```\nFF=a/b X=\"--root $FF\"\npython tools/x.py sub $X \\\n  --n 2  # c\n```\n")
    assert calls == [("tools/x.py", ["sub", "--root", "a/b", "--n", "2"],
                      "python tools/x.py sub --root a/b --n 2 # c")]


def test_pip_requirement_files_exist():
    files = [w for rel in DOCS for line in shell_commands(read(rel))
             for k, w in enumerate(shlex.split(line, comments=True)[1:])
             if line.startswith("pip ") and shlex.split(line, comments=True)[k] == "-r"]
    assert "requirements.txt" in files and "requirements-dev.txt" in files
    for f in files:
        assert os.path.isfile(os.path.join(ROOT, f)), f


def docs_commands():
    return {line for rel in DOCS for line in shell_commands(read(rel))}


def run_as_written(command):
    argv = shlex.split(command)
    if argv[0] == "python" and argv[1].endswith(".py"):  # a script's command: forked (helpers.cli)
        proc = cli(argv[1:], timeout=120)
    else:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.parametrize("command", CHEAP)
def test_cheap_commands_run_as_written(command):
    assert any(c.split("#")[0].strip() == command for c in docs_commands()), \
        f"not in the docs any more: {command}"
    assert run_as_written(command).strip()


@pytest.mark.slow
@pytest.mark.parametrize("command", SLOW)
def test_slow_commands_run_as_written(command):
    assert any(c.split("#")[0].strip() == command for c in docs_commands()), \
        f"not in the docs any more: {command}"
    assert run_as_written(command).strip()


@pytest.mark.parametrize("rel", DOCS)
def test_python_and_yaml_blocks_parse(rel):
    for lang, body in blocks(read(rel)):
        if lang == "python":
            ast.parse(body, filename=rel)
        elif lang in ("yaml", "yml"):
            yaml.safe_load(body)


def test_every_quoted_figure_is_the_recorded_one():
    """A measured figure quoted in README.md or docs/ is the one docs/figures.json records for its
    run (benchmarks/figures.py): a doc and its source that disagree fail here."""
    from benchmarks import figures
    data = figures.load()
    assert not figures.disagreements(data, read), "\n".join(figures.disagreements(data, read))
    docs = {doc for _, doc, _, _ in figures.quotes(data)}
    assert docs <= set(DOCS) and {"README.md", "docs/benchmarks.md", "docs/serve.md"} <= docs
    for name, entry in data.items():
        assert entry["command"] and entry["measured"], name
        for key, value in entry["figures"].items():
            values = value if isinstance(value, list) else [value]
            assert values and all(isinstance(v, (int, float)) for v in values), (name, key)


def test_the_figure_check_sees_a_doc_or_a_record_out_of_step():
    """The checker itself: a figure changed in a doc, a figure changed in the record, and a quote
    naming a figure the run has not are each one line."""
    import copy

    from benchmarks import figures
    data = figures.load()
    assert figures.fill("{a:.2f}x, {b:.1e}, {c:,}, {d[1]:.1f} s", {
        "a": 2.255, "b": 1.6e-5, "c": 32768, "d": [1, 12.66]}) == "2.25x, 1.6e-5, 32,768, 12.7 s"
    readme = read("README.md")
    assert "2.26x as fast through the API" in readme
    changed = readme.replace("2.26x as fast through the API", "2.27x as fast through the API")
    bad = figures.disagreements(data, lambda doc: changed if doc == "README.md" else read(doc))
    assert len(bad) == 1 and bad[0].startswith("README.md does not say") and "2.26x" in bad[0]
    record = copy.deepcopy(data)
    record["serve"]["figures"]["load_latency_ms_p95"] = 40.1
    bad = figures.disagreements(record, read)
    assert len(bad) == 2 and all("figures of serve" in line for line in bad)  # serve.md, README
    record = copy.deepcopy(data)
    record["model"]["quotes"]["docs/benchmarks.md"].append("{no_such_figure:.2f}")
    assert figures.disagreements(record, read) == [
        "model: docs/benchmarks.md: '{no_such_figure:.2f}' names a figure the run has not"]


def test_a_run_records_its_figures_and_keeps_the_quotes(tmp_path):
    """``tools/benchmark.py ... --figures FILE``'s record: the run's entry gets the command, when
    and on what, and the new figures; its quotes stay, and so do the other runs."""
    from benchmarks import figures
    from errors import UserError
    path = tmp_path / "figures.json"
    path.write_text(json.dumps({
        "model": {"command": "old", "measured": "then", "figures": {"recce_train_x": 1.15},
                  "quotes": {"README.md": ["{recce_train_x:.2f}x"]}},
        "serve": {"command": "c", "measured": "m", "figures": {"a": 1}, "quotes": {}}}))
    figures.record(str(path), "model", ["python", "tools/benchmark.py", "model"],
                   {"recce_train_x": 1.2})
    data = json.loads(path.read_text())
    assert data["model"]["command"] == "python tools/benchmark.py model"
    assert data["model"]["figures"] == {"recce_train_x": 1.2}
    assert "torch" in data["model"]["measured"]
    assert data["model"]["quotes"] == {"README.md": ["{recce_train_x:.2f}x"]}
    assert data["serve"] == {"command": "c", "measured": "m", "figures": {"a": 1}, "quotes": {}}
    figures.record(str(tmp_path / "new.json"), "video", ["x"], {"memory_growth": 1.0})
    assert json.loads((tmp_path / "new.json").read_text())["video"]["quotes"] == {}
    other = tmp_path / "notes.json"  # a file that is not a figures file is refused, untouched
    other.write_text('["a list"]')
    with pytest.raises(UserError, match="notes.json: not a figures file"):
        figures.record(str(other), "video", ["x"], {"memory_growth": 1.0})
    assert other.read_text() == '["a list"]'


@pytest.mark.slow
def test_benchmark_with_no_sub_command_is_the_model_table_and_records_it(tmp_path):
    """`python tools/benchmark.py` with no sub-command runs the model table, as before
    sub-commands; --figures records what it printed."""
    out = tmp_path / "figures.json"
    proc = cli(["tools/benchmark.py", "--batch", "2", "--size", "32", "--repeats", "1",
                "--skip-original", "--figures", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| model | train step (s) | x Xception |" in proc.stdout
    entry = json.loads(out.read_text())["model"]
    assert entry["command"] == ("python tools/benchmark.py model --batch 2 --size 32 --repeats 1 "
                                "--skip-original")
    assert entry["figures"]["xception_train_x"] == 1.0
    assert f"| Recce | {entry['figures']['recce_train_s']:.3f} |" in proc.stdout
    assert "recce_original_train_s" not in entry["figures"]


LOG_WORDS = re.compile(r"(?-i:\bSPEC\b)|\bsessions?\b|GPU time|issue tracker|\bround of work\b",
                       re.I)


@pytest.mark.parametrize("rel", DOCS)
def test_no_development_log_text(rel):
    """A figure says what was measured, on what and when; never in which session, no reference to
    a file outside the repository, and issue numbers only of other projects (with the project)."""
    text = read(rel)
    assert not LOG_WORDS.findall(text), LOG_WORDS.findall(text)
    for m in re.finditer(r"\bissues?\s*#?\s*\[?\d+|\(#\d+\)", text, re.I):
        before = text[max(0, m.start() - 60):m.start()]
        assert "VISION-SJTU/RECCE" in before or "github.com/" in text[m.start():m.start() + 80], \
            f"{rel}: an issue number without its project: {text[m.start() - 40:m.end() + 20]!r}"


def test_the_configs_the_commands_name_exist():
    missing = [f"{rel}: {arg}" for rel, _, args, _ in ALL_CALLS for a in args
               for arg in [a.split("=", 1)[-1]]
               if arg.startswith("config/") and not os.path.isfile(os.path.join(ROOT, arg))]
    assert not missing, missing
    assert any("config/paper/ffpp_c23.yml" in args for _, _, args, _ in ALL_CALLS)

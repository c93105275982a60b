"""The paper's tables reproduced: from the datasets to the published numbers beside ours (the work
of ``tools/reproduce.py``).

The tables, their models and rows are in config/paper/tables.yml (a table added there, naming its
model configs and test rows, is listed and run with no change here); the published numbers, each
with its source, in config/paper/published.yml. First every dataset the table needs is checked
(index files, frames and videos of each split it reads), then each model is trained with train.py
(torchrun with --gpus > 1) unless its run has finished, and each row is scored with test.py. A
finished row is not run again; an interrupted training run is resumed. Results:
``<out>/<table>.md`` and ``<out>/<table>.csv`` (frame- and video-level AUC, ACC and EER with a
95 % bootstrap interval over videos, the published number and the difference), and per row
test.py's outputs in ``<out>/<table>/<protocol>/<row>/``.
"""
import csv
import math
import os
import signal
import subprocess
import sys

import yaml

from errors import Terminated, UserError
from fileio import atomic_write, read_table, write_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TABLES_FILE = os.path.join(ROOT, "config", "paper", "tables.yml")
PUBLISHED_FILE = os.path.join(ROOT, "config", "paper", "published.yml")
# --data-root DIR: the dataset folders expected in DIR; --data-root KEY=DIR names one directly.
DATA_KEYS = {"FaceForensics": "ffpp", "CelebDF": "celeb_df", "WildDeepfake": "wilddeepfake",
             "DFDC": "dfdc", "DeepfakeBench": "deepfakebench"}
DEFAULT_FOLDERS = {"ffpp": "FaceForensics++", "celeb_df": "Celeb-DF-v2",
                   "wilddeepfake": "WildDeepfake", "dfdc": "DFDC", "deepfakebench": "DeepfakeBench",
                   "demo": "demo"}
RECIPES = ("paper", "deepfakebench")
METRICS = ("AUC", "ACC", "EER")
MAX_BOOTSTRAP = 100_000

LEVELS = ("frame", "video")
FIELDS = ["table", "row", "model", "tested_on", "protocol", "level", "metric", "published",
          "source", "ours", "difference", "ci_low", "ci_high", "frames", "videos", "checkpoint"]


def _yaml(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_tables(path=None):
    return _yaml(path or TABLES_FILE)


def load_published(path=None):
    """``{(table, row, level, metric): (value, source key)}`` and ``{source key: text}``."""
    path = path or PUBLISHED_FILE
    data = _yaml(path)
    sources = data["sources"]
    out = {}
    for n in data["numbers"]:
        if n["source"] not in sources:
            raise UserError(f"{path}: number {n} names an unknown source {n['source']!r}")
        out[(n["table"], n["row"], n["level"], n["metric"])] = (float(n["value"]), n["source"])
    return out, sources


def load_averages(path=None):
    """``{(table, name): entry}``: the averages a source publishes (value, top3, source, ...)."""
    path = path or PUBLISHED_FILE
    data = _yaml(path)
    out = {}
    for a in data.get("averages") or []:
        if a["source"] not in data["sources"]:
            raise UserError(f"{path}: average {a} names an unknown source {a['source']!r}")
        out[(a["table"], a["name"])] = a
    return out


def load_not_found(path=None):
    """``{table: note}``: tables of the paper whose values no source gives (their cells say so)."""
    data = _yaml(path or PUBLISHED_FILE)
    return {n["table"]: n["note"] for n in data.get("not_found") or []}


def _path(p):
    return p if os.path.isabs(p) else os.path.join(ROOT, p)


# ------------------------------------------------------------------------------------ data roots
def parse_data_roots(values):
    """``[DIR]`` or ``[KEY=DIR, ...]`` -> {key: folder}."""
    roots = {}
    for v in values or []:
        if "=" in v:
            key, folder = v.split("=", 1)
            if key not in DEFAULT_FOLDERS:
                raise UserError(f"--data-root {v}: unknown dataset key {key!r} (known: "
                                f"{', '.join(DEFAULT_FOLDERS)})")
            roots[key] = folder
        else:
            if not os.path.isdir(v):
                raise UserError(f"--data-root {v}: not a folder")
            for key, name in DEFAULT_FOLDERS.items():
                if key != "demo":  # the demo data stays where its config says, unless named
                    roots.setdefault(key, os.path.join(v, name))
    return roots


def root_opts(dataset_file, data_name, roots, branches=None, dry_run=False):
    """``<branch>.root=...`` overrides for the branches of ``dataset_file``; demo branches keep
    theirs unless ``demo=DIR`` is given (then DIR/<the file's folder name>)."""
    data = _yaml(dataset_file)
    opts = []
    for name, branch in data.items():
        if branches is not None and name not in branches:
            continue
        if not isinstance(branch, dict) or "root" not in branch:
            continue
        if branch.get("demo"):
            if "demo" in roots:
                folder = os.path.basename(os.path.normpath(branch["root"]))
                opts.append(f"{name}.root={os.path.join(roots['demo'], folder)}")
            continue
        key = DATA_KEYS.get(data_name, data_name)
        if key not in roots and dry_run:
            opts.append(f"{name}.root=<{key} folder>")
        elif key not in roots:
            raise UserError(f"dataset {data_name} ({dataset_file}) needs its folder: "
                            f"--data-root {key}=DIR, or --data-root DIR holding "
                            f"{DEFAULT_FOLDERS.get(key, key)}/")
        else:
            opts.append(f"{name}.root={roots[key]}")
            if data_name == "DeepfakeBench":  # DIR holds dataset_json/ beside the frames
                json_folder = os.path.join(roots[key], "dataset_json")
                opts.append(f"{name}.dataset_json_folder={json_folder}")
    return opts


def model_spec(spec, recipe="paper"):
    """A table's model entry: ``{config, opts}``, or ``{recipes: {name: {config, opts}}}`` where
    --recipe picks the training recipe."""
    if "recipes" not in spec:
        return spec
    if recipe not in spec["recipes"]:
        raise UserError(f"--recipe {recipe}: this table has {', '.join(spec['recipes'])}")
    return spec["recipes"][recipe]


# ------------------------------------------------------------------------------------------- plan
class Plan:
    """The models to train and the rows to score for one table, with their command lines."""

    def __init__(self, table_name, tables, args, roots):
        if table_name not in tables:
            raise UserError(f"--table {table_name}: unknown (known: {', '.join(tables)})")
        self.name = table_name
        self.table = tables[table_name]
        self.args = args
        self.video_auc = video_rule(self.table, args)
        self.models = {}
        from trainer.config import load_config, split_overrides
        user_model_opts, user_branch_opts = split_overrides(args.opt)
        for key, spec in self.table["models"].items():
            spec = model_spec(spec, args.recipe)
            config = _path(spec["config"])
            opts = list(spec.get("opts", [])) + user_model_opts + user_branch_opts
            data_file = str((_yaml(config).get("data") or {}).get("file", ""))
            if data_file and not os.path.isabs(data_file) and not os.path.isfile(data_file):
                opts.insert(0, f"data.file={_path(data_file)}")  # run from another folder
            if args.protocol:
                opts.append(f"config.protocol={args.protocol}")
            if args.runs:
                opts.append(f"config.ckpt_fold={args.runs}")
            model_sec, branch_sec = split_overrides(opts)
            cfg = load_config(config, model_sec, branch_sec)  # checks the overrides now
            run_id = cfg["config"]["id"] or f"reproduce_{key}"
            if args.protocol and args.protocol != "original":
                run_id = f"{run_id}-{args.protocol}"
            if run_id != cfg["config"]["id"]:
                opts.append(f"config.id={run_id}")
            roots_opts = [] if args.checkpoints else root_opts(
                _path(cfg["data"]["file"]), cfg["data"]["name"], roots, dry_run=args.dry_run)
            model_sec, branch_sec = split_overrides(opts + roots_opts)
            cfg = load_config(config, model_sec, branch_sec)
            protocol = cfg["config"]["protocol"] or (
                "original" if cfg["data"]["val_branch"] == cfg["data"]["test_branch"] else "clean")
            self.models[key] = {"config": config, "opts": opts + roots_opts, "cfg": cfg,
                                "model_opts": split_overrides(opts)[0], "protocol": protocol,
                                "run_dir": os.path.join(cfg["config"]["ckpt_fold"],
                                                        cfg["model"]["name"], run_id)}
        self.rows = []
        for row in self.table["rows"]:
            model = self.models[row["model"]]
            file = _path(row["file"])
            opts = root_opts(file, row["data"], roots, {row["branch"]}, args.dry_run)
            self.rows.append({**row, "file": file, "root_opts": opts,
                              "protocol": model["protocol"]})

    # commands
    def launcher(self, script):
        if self.args.gpus > 1:
            return [sys.executable, "-m", "torch.distributed.run",
                    f"--nproc_per_node={self.args.gpus}", os.path.join(ROOT, script)]
        return [sys.executable, os.path.join(ROOT, script)]

    def train_command(self, key, resume=False):
        m = self.models[key]
        cmd = self.launcher("train.py") + ["--config", m["config"]]
        for opt in m["opts"] + (["config.resume=true"] if resume else []):
            cmd += ["--opt", opt]
        return cmd

    def test_opts(self, row):
        """The model-config overrides that score ``row``: its model's, then the row's dataset and
        branch (selecting on that branch: the row's file need not have a val_cfg)."""
        return self.models[row["model"]]["model_opts"] + [
            f"data.name={row['data']}", f"data.file={row['file']}",
            f"data.test_branch={row['branch']}", "config.protocol=original",
            f"data.val_branch={row['branch']}"]

    def test_command(self, row, ckpt, out):
        cmd = [sys.executable, os.path.join(ROOT, "test.py"), "--config",
               self.models[row["model"]]["config"], "--ckpt", ckpt, "--out", out]
        for opt in self.test_opts(row) + row["root_opts"]:
            cmd += ["--opt", opt]
        if self.video_auc != "project":
            cmd += ["--video_auc", self.video_auc]
        if self.args.device:
            cmd += ["--device", self.args.device]
        if self.args.trust:
            cmd.append("--trust")
        return cmd

    def out_dir(self, row):
        return os.path.join(self.args.out, self.name, row["protocol"], row["name"])

    # state
    def checkpoint(self, key):
        """The checkpoint a row of ``key`` is scored with: --checkpoints DIR/<key>.bin (or the
        newest best_model_<step>.bin in DIR/<key>/), else the run's best checkpoint."""
        from trainer.checkpoint import newest_best
        if self.args.checkpoints:
            path = os.path.join(self.args.checkpoints, f"{key}.bin")
            if os.path.isfile(path):
                return path
            best = newest_best(os.path.join(self.args.checkpoints, key))
            if best:
                return best
            raise UserError(f"--checkpoints: no {key}.bin (nor {key}/best_model_<step>.bin) in "
                            f"{self.args.checkpoints}")
        best = newest_best(self.models[key]["run_dir"])
        if not best:
            raise UserError(f"{self.models[key]['run_dir']}: no best_model_<step>.bin (the run "
                            "never validated, or its validation metric was undefined)")
        return best

    def trained(self, key):
        """(finished, a checkpoint to resume from exists)."""
        from trainer.checkpoint import load_checkpoint
        latest = os.path.join(self.models[key]["run_dir"], "latest_model.bin")
        if not os.path.isfile(latest):
            return False, False
        from trainer.config import branch
        steps = branch(self.models[key]["cfg"], "train")["num_steps"]
        state = load_checkpoint(latest)
        return int(state.get("step", 0)) >= int(steps), True


# ------------------------------------------------------------------------------------ data check
def check_data(plan):
    """Every split the table reads: frames and videos, or what is missing. Returns report lines;
    raises UserError naming everything missing."""
    from dataset import build_dataset
    from trainer.config import branch, load_config
    from trainer.data import holdout_of
    lines, missing, seen = [], [], set()
    uses = []
    if not plan.args.checkpoints:
        for key, m in plan.models.items():
            cfg = m["cfg"]
            tr, va = branch(cfg, "train"), branch(cfg, "val")
            uses.append((f"{key} {cfg['data']['train_branch']}", cfg["data"]["name"], tr,
                         holdout_of(tr, va), key))
            uses.append((f"{key} {cfg['data']['val_branch']}", cfg["data"]["name"], va, 0, None))
    kept = []
    for row in plan.rows:
        try:
            cfg = load_config(plan.models[row["model"]]["config"], plan.test_opts(row),
                              row["root_opts"])
        except UserError as exc:
            missing.append(f"row {row['name']}: {exc}")  # label: problem
            continue
        if row.get("optional"):  # a test set of its own: scored where its data is found
            try:
                build_dataset(row["data"], branch(cfg, "test"))
            except UserError as exc:
                if "dataset_json_folder" in str(exc) or "dataset root not found" in str(exc):
                    lines.append(f"row {row['name']}: not found, skipped ({exc})")
                    continue
        kept.append(row)
        uses.append((f"row {row['name']} ({os.path.relpath(row['file'], ROOT)} {row['branch']})",
                     row["data"], branch(cfg, "test"), 0, None))
    plan.rows = kept
    if not kept:
        missing.append(f"table {plan.name}: no test set found")
    for label, name, branch_cfg, held, train_key in uses:
        ident = (name, repr(sorted(branch_cfg.items(), key=lambda kv: kv[0])), held)
        if ident in seen:
            continue
        seen.add(ident)
        try:
            ds = build_dataset(name, branch_cfg, exclude_holdout=held)
        except UserError as exc:
            missing.append(f"{label}: {exc}")
            continue
        videos = len({it.video for it in ds.items})
        line = f"{label}: {len(ds):,} frames, {videos:,} videos"
        if train_key:
            m = plan.models[train_key]
            batch = m["cfg"]["data"]["train_batch_size"] * plan.args.gpus
            per_epoch = math.ceil(len(ds) / ds.frames_per_batch(batch))  # a paired source: half
            line += f"; {per_epoch:,} iterations per epoch at {batch} images a step"
            sched = m["cfg"]["config"]["scheduler"] or {}
            if sched.get("name") == "StepLR":
                line += (f" (step_size {sched['step_size']:,} = "
                         f"{sched['step_size'] / per_epoch:.2f} epochs here)")
            steps, amp = branch_cfg["num_steps"], m["cfg"]["config"]["amp"]
            line += (f"; {steps:,} steps = {steps / per_epoch:.2f} passes here, "
                     f"{'fp32' if amp == 'none' else amp}")
        lines.append(line)
    if missing:
        grouped = {}  # one line per problem, naming every split it stops
        for text in missing:
            label, _, problem = text.partition(": ")
            grouped.setdefault(problem, []).append(label)
        raise UserError(f"table {plan.name}: data missing or unreadable, nothing was run: "
                        + "; ".join(f"{problem} [{', '.join(labels)}]"
                                    for problem, labels in grouped.items()))
    return lines


# --------------------------------------------------------------------------------------- results
def read_scores(path):
    """(labels, probabilities, video ids, frame paths) of a test.py scores.csv: the detector's
    raw probabilities, from which test.py's metrics are computed (``raw_probability``; a file
    written before that column, ``fake_probability``, which was the raw one then)."""
    labels, probs, videos, paths = [], [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            labels.append(int(r["label"]))
            probs.append(float(r.get("raw_probability") or r["fake_probability"]))
            videos.append(r["video"])
            paths.append(r["path"])
    return labels, probs, videos, paths


def video_rule(table, args):
    """The video grouping of a table's video-level rows: --video_auc, else the table's
    ``video_auc`` (deepfakebench's table: DeepfakeBench's), else the project's."""
    return getattr(args, "video_auc", None) or table.get("video_auc") or "project"


def row_results(plan, row, scores_csv, ckpt, published, resamples):
    """Frame level: the bootstrap draws the dataset's videos. Video level: the videos of
    ``plan.video_auc`` (DeepfakeBench's are drawn as it groups them, by folder name)."""
    from trainer.metrics import bootstrap_interval
    labels, probs, videos, paths = read_scores(scores_csv)
    out = []
    for level in LEVELS:
        rule = plan.video_auc if level == "video" else "project"
        groups = paths if rule == "deepfakebench" else videos
        for metric in METRICS:
            value, low, high = bootstrap_interval(labels, probs, groups, metric, level,
                                                  resamples, rule=rule)
            ref = published.get((plan.name, row["name"], level, metric))
            ours = 100 * value
            out.append({
                "table": plan.name, "row": row["name"], "model": row["model"],
                "tested_on": f"{row['data']} {row['branch']}", "protocol": row["protocol"],
                "level": level, "metric": metric,
                "published": "" if ref is None else f"{ref[0]:.2f}",
                "source": "" if ref is None else ref[1], "ours": f"{ours:.2f}",
                "difference": "" if ref is None or math.isnan(ours) else f"{ours - ref[0]:+.2f}",
                "ci_low": f"{100 * low:.2f}", "ci_high": f"{100 * high:.2f}",
                "frames": len(labels), "videos": len(set(videos)),
                "checkpoint": os.path.relpath(ckpt) if not os.path.isabs(ckpt) else ckpt})
    return out


def read_results(path):
    """The finished rows of ``<table>.csv``; a file edited by hand or cut short is one error
    line."""
    return read_table(path, FIELDS, numbers=("ours", "ci_low", "ci_high"),
                      what="a table this tool wrote")


VIDEO_LEVEL = {
    "project": "Video level: each video of the dataset, the mean probability of its frames.",
    "deepfakebench": "Video level: DeepfakeBench's videos (its training/metrics/utils.py): frames "
                     "grouped by the name of their folder, so same-named folders of different "
                     "methods are one video, fake only when all its frames are; the mean "
                     "probability of its frames (test.py --video_auc deepfakebench)."}


def average_lines(plan, results, used):
    """The table's ``averages``: the published mean (and rank count) beside the mean of ours
    over the same rows, once every one of them is scored. ``used`` collects the sources cited."""
    groups = plan.table.get("averages") or []
    if not groups:
        return []
    published = load_averages()
    lines = ["", "| average | level | metric | published | published Top3 | ours | rows scored |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for g in groups:
        ref = published.get((plan.name, g["name"]))
        level, metric = (ref["level"], ref["metric"]) if ref else ("frame", "AUC")
        ours = {r["row"]: float(r["ours"]) for r in results
                if r["row"] in g["rows"] and (r["level"], r["metric"]) == (level, metric)}
        pub, top3 = "not recorded", "-"
        if ref:
            if ref["source"] not in used:
                used.append(ref["source"])
            pub = f"{float(ref['value']):.2f} [{used.index(ref['source']) + 1}]"
            top3 = str(ref.get("top3", "-"))
        mean = (f"{sum(ours.values()) / len(ours):.2f}" if len(ours) == len(g["rows"])
                and all(v == v for v in ours.values()) else "-")
        lines.append(f"| {g.get('title', g['name'])} | {level} | {metric} | {pub} | {top3} | "
                     f"{mean} | {len(ours)} of {len(g['rows'])} |")
    lines += ["", "Top3 (published): on how many of the average's test sets the source ranks "
              "RECCE among the three best detectors of its table. An average of ours is shown "
              "only when every row of it was scored (a missing test set would change what is "
              "averaged)."]
    return lines


def write_results(plan, results, sources, resamples):
    """``<out>/<table>.csv`` and ``<out>/<table>.md`` from the rows so far (atomically)."""
    from trainer.config import PROTOCOLS
    out = plan.args.out
    os.makedirs(out, exist_ok=True)
    write_table(os.path.join(out, f"{plan.name}.csv"), results, FIELDS)
    protocols = sorted({r["protocol"] for r in results})
    lines = [f"# {plan.table.get('title', plan.name)}", ""]
    for p in protocols:
        lines.append(f"Protocol **{p}**: {PROTOCOLS[p]}.")
    lines += ["", f"Percent. Interval: 95 % bootstrap over videos ({resamples} resamples, real and "
              "fake videos drawn separately); frame level scores the frames of the drawn videos, "
              "video level their mean probabilities. \"not recorded\": no published number for "
              "this cell in config/paper/published.yml.", "", VIDEO_LEVEL[plan.video_auc], "",
              "| row | tested on | protocol | level | metric | published | ours | 95 % interval "
              "| difference |", "| --- | --- | --- | --- | --- | ---: | ---: | --- | ---: |"]
    used, notes = [], []
    missing_note = load_not_found().get(plan.name)
    for r in results:
        pub = r["published"] or ("not found" if missing_note else "not recorded")
        if r["source"]:
            if r["source"] not in used:
                used.append(r["source"])
            pub += f" [{used.index(r['source']) + 1}]"
        elif missing_note:
            notes = [missing_note]
            pub += " [*]"
        lines.append(f"| {r['row']} | {r['tested_on']} | {r['protocol']} | {r['level']} | "
                     f"{r['metric']} | {pub} | {r['ours']} | [{r['ci_low']}, {r['ci_high']}] | "
                     f"{r['difference'] or '-'} |")
    lines += average_lines(plan, results, used)
    if used:
        lines += [""] + [f"[{i + 1}] {' '.join(sources[s].split())}" for i, s in enumerate(used)]
    if notes:
        lines += ["", f"[*] not found: {notes[0]}"]
    frames = {(r["row"], r["protocol"]): (r["frames"], r["videos"], r["checkpoint"])
              for r in results}
    lines += ["", "Scored: " + "; ".join(f"{row} ({p}) {int(f):,} frames of {int(v):,} videos "
                                         f"with {c}" for (row, p), (f, v, c) in frames.items())]
    text = "\n".join(lines) + "\n"
    atomic_write(os.path.join(out, f"{plan.name}.md"), lambda fh: fh.write(text))
    return text


# ------------------------------------------------------------------------------------------ main
def list_tables(tables, published):
    from trainer.config import branch, load_config, split_overrides
    lines = []
    for name, t in tables.items():
        needs, steps, cpu = set(), 0, True
        for spec in t["models"].values():
            recipes = ", ".join(spec.get("recipes", {}))
            spec = model_spec(spec)
            cfg = load_config(_path(spec["config"]), *split_overrides(spec.get("opts", [])))
            steps += branch(cfg, "train")["num_steps"]
            demo = bool(branch(cfg, "train").get("demo"))
            cpu = cpu and demo
            needs.add("demo (made on first use)" if demo
                      else DATA_KEYS.get(cfg["data"]["name"], cfg["data"]["name"]))
        for row in t["rows"]:
            if not (_yaml(_path(row["file"])).get(row["branch"]) or {}).get("demo"):
                needs.add(DATA_KEYS.get(row["data"], row["data"]))
        recorded = sum(1 for k in published if k[0] == name)
        missing_note = load_not_found().get(name)
        lines += [f"{name}: {t.get('title', '')}",
                  f"  models to train: {', '.join(t['models'])} ({steps:,} steps in all; "
                  f"--checkpoints DIR takes DIR/<model>.bin instead)",
                  f"  rows: {', '.join(r['name'] for r in t['rows'])}"
                  + (" (each where its data is found)" if all(r.get("optional")
                                                             for r in t["rows"]) else ""),
                  f"  datasets: {', '.join(sorted(needs))}; published numbers recorded: "
                  f"{recorded}",
                  *([f"  not found: {missing_note}"] if missing_note else []),
                  *([f"  recipes: {recipes} (--recipe; default paper)"] if recipes else []),
                  *([f"  video level: the {t['video_auc']} grouping (--video_auc; default there)"]
                    if t.get("video_auc", "project") != "project" else []),
                  "  GPUs: " + ("none needed (CPU)" if cpu else
                                "one or more (--gpus N: torchrun; the schedules assume one, "
                                "32 images a step)")]
    lines += ["faces: the paper's tables were trained on RetinaFace crops, about 36,000 real and "
              "36,000 fake FF++ training frames (about 50 per real video, 12.5 per fake): "
              "tools/extract_faces.py --crop recce --weights Resnet50_Final.pth --frames_real 50 "
              "--frames_fake 12.5 for each FF++ videos folder; DeepfakeBench's with --crop "
              "deepfakebench (32 frames a video); see docs/data.md#crop-rules"]
    return "\n".join(lines)


def run(cmd, dry_run):
    print("$ " + " ".join(_quote(c) for c in cmd), flush=True)
    if dry_run:
        return
    code = run_child(cmd, cwd=os.getcwd())  # a stop reaches every process of the child, saved
    if code:
        script = next((os.path.basename(c) for c in cmd if c.endswith(".py")), cmd[0])
        raise UserError(f"{script} exited with status {code}; finished rows are kept, run the "
                        "same command again to continue")


def run_child(cmd, cwd=None):
    """Run ``cmd`` (train.py, torchrun, test.py) in a process group of its own and wait for it.
    SIGINT and SIGTERM received meanwhile go to the whole group (torchrun and every worker
    alike), which stop the way train.py's own handling expects (after the step, saved); this
    process waits until the child has exited, then re-raises the interruption. Nothing is left
    running. Returns the child's exit status."""
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
    received = []

    def forward(signum, frame):
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise Terminated() if signal.SIGTERM in received else KeyboardInterrupt()
    return code


def _quote(text):
    import shlex
    return shlex.quote(text)


def reproduce(args):
    """Reproduce the table ``args.table`` (or, with ``args.list``, print the tables). ``args``
    holds tools/reproduce.py's options: list, table, data_root (``[DIR]`` or ``[KEY=DIR, ...]``),
    checkpoints, protocol, gpus, device, out, runs, bootstrap, opt, trust, dry_run, video_auc,
    recipe. Raises UserError for a mistake the user can make (nothing run, or finished rows
    kept)."""
    tables = load_tables()
    published, sources = load_published()
    if args.list:
        print(list_tables(tables, published))
        return 0
    if not args.table:
        raise UserError("give --table NAME (or --list)")
    if args.gpus < 1 or args.bootstrap < 1:
        raise UserError("--gpus and --bootstrap: expected a positive integer")
    if args.bootstrap > MAX_BOOTSTRAP:
        raise UserError(f"--bootstrap {args.bootstrap}: at most {MAX_BOOTSTRAP:,} resamples "
                        "(1,000 give the interval to about 0.5 %; each resample rescoring "
                        "every row's frames)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: is a file, expected a folder")
    plan = Plan(args.table, tables, args, parse_data_roots(args.data_root))
    if not args.dry_run:
        for line in check_data(plan):
            print(line, flush=True)
    if not args.dry_run:
        from fileio import file_identity, same_work
        ckpts = ({k: file_identity(plan.checkpoint(k)) for k in plan.models}
                 if args.checkpoints else None)
        os.makedirs(args.out, exist_ok=True)
        key = {"table": plan.name, "checkpoints": ckpts, "runs": args.runs,
               "protocol": args.protocol, "recipe": args.recipe, "opts": args.opt,
               "data_roots": sorted(args.data_root), "bootstrap": args.bootstrap}
        if plan.video_auc != "project":  # absent = the project's (keys written before it)
            key["video_auc"] = plan.video_auc
        same_work(os.path.join(args.out, f"{plan.name}.key.json"), key,
                  os.path.isfile(os.path.join(args.out, f"{plan.name}.csv")),
                  f"--out {args.out} ({plan.name}.csv)")
    results = read_results(os.path.join(args.out, f"{plan.name}.csv"))
    done = {(r["row"], r["protocol"]) for r in results}
    for row in plan.rows:
        if (row["name"], row["protocol"]) in done:
            print(f"row {row['name']} ({row['protocol']}): done, kept", flush=True)
            continue
        key = row["model"]
        if not args.checkpoints and not plan.models[key].get("trained"):
            finished, started = (False, False) if args.dry_run else plan.trained(key)
            if not finished:
                run(plan.train_command(key, resume=started), args.dry_run)
            plan.models[key]["trained"] = True
        out = plan.out_dir(row)
        ckpt = ("<best checkpoint of " + plan.models[key]["run_dir"] + ">"
                if args.dry_run and not args.checkpoints else plan.checkpoint(key))
        run(plan.test_command(row, ckpt, out), args.dry_run)
        if args.dry_run:
            continue
        results = [r for r in results if (r["row"], r["protocol"]) !=
                   (row["name"], row["protocol"])]
        results += row_results(plan, row, os.path.join(out, "scores.csv"), ckpt, published,
                               args.bootstrap)
        write_results(plan, results, sources, args.bootstrap)  # after every row: resumable
    if not args.dry_run:
        print(write_results(plan, results, sources, args.bootstrap))
        print(f"written: {os.path.join(args.out, plan.name + '.md')}, "
              f"{os.path.join(args.out, plan.name + '.csv')}")

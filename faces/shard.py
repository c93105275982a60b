"""Face extraction and scoring spread over processes: the ranks of ``torchrun`` (one machine or
several) or separate runs given ``--shard K/N`` (array jobs), with the outputs of one process.

- The split: every process lists the same inputs and takes shard ``K`` of ``N`` (``split``: the
  largest file first, each to the least loaded shard, so every shard gets about the same number
  of bytes to decode); deterministic, so that separate runs agree without talking. Under torchrun
  the ranks first check that they all see the same inputs.
- Agreement: under torchrun the ranks talk through a gloo group (CPU only, whatever the device),
  and only through ``Plan.agree``: every rank brings its error or its data to the same point, and
  one failed rank makes every rank stop with its reason (``RankFailed``). Nothing else decides a
  rank's path.
- Resuming, by input: a scored input's row is kept in a parts folder beside ``--output`` as the
  work goes (``Parts``: a chunk file written atomically every ``FLUSH_ROWS`` rows or ``FLUSH_S``
  seconds); an extracted video is done when its folder is marked ``.done`` (faces.extract). A
  rerun with the same arguments does only the rest, whatever the number of shards of the first
  run; other arguments are refused (``fileio.same_work`` for rows, ``faces.manifest.write_meta``
  for crops).
- The merge: when every shard of one ``N`` has finished (a marker each), the merge writes the one
  output file (rows in the input order) or the one ``manifest.jsonl``, atomically, then removes
  the parts it made, and only those. Under torchrun rank 0 merges after every rank has finished;
  separate shards are merged by a run with ``--merge``, which names the shards missing otherwise.

Plain runs (no torchrun, no ``--shard``) do not come here.
"""
import datetime
import hashlib
import heapq
import json
import os
import re
import sys
import time

from errors import UserError, flags, one_line
from fileio import FolderLock, atomic_write_text, same_work

# a rank may wait this long for the slowest one at the end of its share
TIMEOUT = datetime.timedelta(hours=72)
FLUSH_ROWS = 200  # a chunk of rows written every so many rows ...
FLUSH_S = 60.0  # ... or seconds, whichever comes first
SHARDS = ".shards"  # the shard records of an extraction, in its output folder
CHUNK = re.compile(r"(\d+)-of-(\d+)\.(\d+)\.json")  # rows of shard K of N, the n-th chunk
MARKER = re.compile(r"(\d+)-of-(\d+)\.done")  # shard K of N finished (its failures inside)
LOCK = re.compile(r"\.lock-(\d+)-of-(\d+)")  # shard K of N at work
KEY = "key.json"  # what made the rows of a parts folder (fileio.same_work)


class RankFailed(UserError):
    """A rank failed (or the ranks disagree): every rank raises it with the same reason."""


def parse_shard(text, flag="--shard"):
    """``K/N`` -> (K, N), 1 <= K <= N; anything else is one error naming the value and flag."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise UserError(f"{flag} {text}: expected K/N, shard K of N (1/4, 2/4, 3/4, 4/4)")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise UserError(f"{flag} {text}: expected K/N with 1 <= K <= N (1/{max(n, 1)} to "
                        f"{max(n, 1)}/{max(n, 1)})")
    return k, n


class Plan:
    """This process's share: shard ``k`` of ``n`` (1-based); ``ranks``: one of torchrun's ranks
    (rank ``k - 1``, its GPU ``cuda:local_rank``), else a separate run (``--shard``)."""

    def __init__(self, k, n, ranks=False, local_rank=0):
        self.k, self.n, self.ranks, self.local_rank = k, n, ranks, local_rank

    @property
    def name(self):
        return f"{self.k}-of-{self.n}"

    @property
    def label(self):
        return f"{self.k}/{self.n}"

    @property
    def merges(self):
        """Whether this process merges when the shares are done: rank 0 under torchrun."""
        return self.ranks and self.k == 1

    def agree(self, error=None, data=None):
        """Every rank brings ``error`` (None, or its reason on one line) or ``data`` here; returns
        every rank's data in rank order, or raises ``RankFailed`` on every rank with the first
        failed rank's reason. A separate run just raises its own error."""
        if not self.ranks:
            if error:
                raise RankFailed(error)
            return [data]
        import torch.distributed as dist
        got = [None] * self.n
        try:
            dist.all_gather_object(got, (error, data))
        except Exception as exc:  # noqa: BLE001 - a rank died: torchrun stops the others too
            raise RankFailed(f"a rank stopped before the others ({one_line(exc)})") from None
        failed = [(r, e) for r, (e, _) in enumerate(got) if e]
        if failed:
            rank, reason = failed[0]
            more = f" (and {len(failed) - 1} more ranks)" if len(failed) > 1 else ""
            raise RankFailed(f"rank {rank} failed{more}: {reason}")
        return [d for _, d in got]

    def run(self, work, names=None):
        """``work()`` on this rank, then the outcomes agreed (``agree``): every rank's result in
        rank order. An error of ``work`` reaches the other ranks as one line (said with the flags
        of ``names``, as ``errors.flags`` says it); Ctrl-C and SIGTERM stop this rank at once
        (torchrun then stops the others)."""
        try:
            result = work()
        except RankFailed:
            raise
        except Exception as exc:
            if not self.ranks:
                raise
            self.agree(_said(exc, names))
            raise
        return self.agree(None, result)

    def close(self):
        if self.ranks:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def _said(exc, names):
    """The one line an entry point would print for ``exc``."""
    if isinstance(exc, UserError):
        try:
            with flags(**(names or {})):
                raise exc
        except UserError as said:
            return one_line(said)
    return f"{type(exc).__name__}: {one_line(exc)}"


def plan_from(shard=None, merge=False):
    """The share of this process: under torchrun (WORLD_SIZE > 1) its rank's (the gloo group is
    started here), with ``--shard K/N`` that shard, else None (a plain run, or ``--merge``).
    Under torchrun ``--shard`` and ``--merge`` are refused: the ranks split and merge by
    themselves."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if merge and shard is not None:
        raise UserError(f"--merge joins the parts of every shard: give it without --shard {shard}")
    if world > 1:
        if shard is not None:
            raise UserError(f"--shard {shard}: under torchrun every rank takes its share by "
                            "itself; --shard is for separate runs (array jobs)")
        if merge:
            raise UserError("--merge: under torchrun rank 0 merges by itself; run --merge "
                            "without torchrun")
        import torch.distributed as dist
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=TIMEOUT)
            _STARTED.append(True)
        return Plan(rank + 1, world, ranks=True, local_rank=local)
    if shard is None:
        return None
    return Plan(*parse_shard(shard))


_STARTED = []  # the gloo group of this process was started (plan_from)


def exit_process(status):
    """The end of an entry point's process (``exit_process(main())``): a process that ran as a
    torchrun rank flushes its output and leaves with ``os._exit``, without the interpreter's
    teardown, which can abort a rank of this PyTorch after its work is done and written (torchrun
    then reports a crashed rank); any other process exits as usual."""
    if not _STARTED:
        sys.exit(status)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)


def rank_device(plan, device):
    """A rank's device: ``cuda`` (or no choice) means its own GPU, ``cuda:LOCAL_RANK``, where
    there is CUDA; any other choice is kept."""
    if plan is not None and plan.ranks and device in (None, "cuda"):
        import torch
        if torch.cuda.is_available():
            return f"cuda:{plan.local_rank}"
    return device


def split(sizes, n):
    """The shard (0 to n-1) of each item of ``sizes``: the largest first (ties: the earlier
    item), each to the least loaded shard (ties: the lower shard)."""
    loads = [(0, s) for s in range(n)]
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, s = heapq.heappop(loads)
        owner[i] = s
        heapq.heappush(loads, (load + max(int(sizes[i]), 1), s))
    return owner


def file_sizes(paths):
    """The size in bytes of each file (0 where there is none: it is reported by the work)."""
    out = []
    for p in paths:
        try:
            out.append(os.path.getsize(p))
        except OSError:
            out.append(0)
    return out


def share(plan, items, sizes=None):
    """The indices of ``items`` that are this shard's (``split`` by ``sizes``, file sizes where
    not given). Under torchrun the ranks first agree that they see the same inputs."""
    sizes = file_sizes(items) if sizes is None else list(sizes)
    if plan.ranks:
        digest = hashlib.sha256(json.dumps([list(items), sizes]).encode()).hexdigest()
        if len(set(plan.agree(None, digest))) > 1:
            raise RankFailed("the ranks see different inputs: every node needs the same files "
                             "at the same paths (a shared file system), unchanged while it runs")
    owner = split(sizes, plan.n)
    return [i for i, s in enumerate(owner) if s == plan.k - 1]


def finished_set(markers, what):
    """Of the shard markers (K, N) found, the N of which every shard has finished (the newest
    such when several: the last in ``markers``); else one error naming the missing shards."""
    by_n = {}
    for k, n in markers:
        by_n.setdefault(n, set()).add(k)
    complete = [n for k, n in markers if by_n[n] == set(range(1, n + 1))]
    if complete:
        return complete[-1]
    if not markers:
        raise UserError(f"--merge: no shard has finished in {what}: run every shard (--shard K/N) "
                        "first")
    n = markers[-1][1]
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in by_n[n]]
    raise UserError(f"--merge: shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"{'have' if len(missing) > 1 else 'has'} not finished in {what}: run "
                    f"{'them' if len(missing) > 1 else 'it'}, then --merge again")


def _markers(folder):
    """(K, N) of the shard markers in ``folder``, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = MARKER.fullmatch(name)
        if m:
            found.append((os.stat(os.path.join(folder, name)).st_mtime_ns, name,
                          (int(m.group(1)), int(m.group(2)))))
    return [kn for _, _, kn in sorted(found)]


def remove_own(folder, patterns):
    """Removes the files of ``folder`` whose names match one of ``patterns`` (the files this
    module makes), then the folder if nothing else is left in it; anything else stays."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if any(p.fullmatch(name) for p in patterns) and os.path.isfile(path) \
                and not os.path.islink(path):
            os.remove(path)
    if not os.listdir(folder):
        os.rmdir(folder)


# -- scoring: rows kept in a parts folder beside --output -----------------------------------------

class Parts:
    """The rows of a sharded scoring run, in ``folder``: each shard writes chunk files of
    ``{"input", "row", "failed"}`` entries (atomically) as it goes, and a marker when it has
    finished; ``key`` (what makes the rows) is kept beside them and must match (``same_work``)."""

    def __init__(self, folder, key, plan=None):
        self.folder, self.plan = folder, plan
        os.makedirs(folder, exist_ok=True)
        same_work(os.path.join(folder, KEY), key, any(CHUNK.fullmatch(n) or MARKER.fullmatch(n)
                                                      for n in os.listdir(folder)),
                  f"the parts folder {folder}")
        self.pending, self.last = [], time.monotonic()
        self.lock, self.failed = None, False
        if plan is not None:
            self.lock = FolderLock(folder, "--output", "give another --shard",
                                   name=f".lock-{plan.name}")
            seqs = [int(m.group(3)) for m in map(CHUNK.fullmatch, os.listdir(folder))
                    if m and f"{m.group(1)}-of-{m.group(2)}" == plan.name]
            self.seq = max(seqs, default=-1) + 1

    def rows(self):
        """Every entry of every chunk, by input (from shards of any N)."""
        entries = {}
        for name in sorted(os.listdir(self.folder)):
            if not CHUNK.fullmatch(name):
                continue
            path = os.path.join(self.folder, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    chunk = json.load(fh)
                for e in chunk:
                    entries[e["input"]] = e
                    e["row"], e["failed"]
            except (OSError, ValueError, TypeError, KeyError):
                raise UserError(f"{path} is not a part this project wrote: move it away") from None
        return entries

    def add(self, item, row, failed):
        self.pending.append({"input": item, "row": row, "failed": bool(failed)})
        self.failed = self.failed or bool(failed)
        if len(self.pending) >= FLUSH_ROWS or time.monotonic() - self.last >= FLUSH_S:
            self.flush()

    def flush(self):
        if self.pending:
            path = os.path.join(self.folder, f"{self.plan.name}.{self.seq:06d}.json")
            atomic_write_text(path, json.dumps(self.pending))
            self.seq += 1
            self.pending = []
        self.last = time.monotonic()

    def finish(self):
        """The last chunk, then this shard's marker: the shard has finished."""
        self.flush()
        atomic_write_text(os.path.join(self.folder, f"{self.plan.name}.done"), "finished\n")

    def release(self):
        if self.lock is not None:
            self.lock.release()

    def merge(self, inputs, write):
        """When every shard of one N has finished: ``write(rows)`` (atomically) with the rows of
        ``inputs`` in their order, then the parts removed. Returns whether an input failed."""
        finished_set(_markers(self.folder), self.folder)
        entries = self.rows()
        missing = [x for x in inputs if x not in entries]
        if missing:
            shown = ", ".join(os.path.basename(x) for x in missing[:3])
            raise UserError(f"--merge: {len(missing)} of {len(inputs)} inputs have no row in "
                            f"{self.folder} ({shown}{', ...' if len(missing) > 3 else ''}): "
                            "the inputs changed since the shards ran; run the shards again")
        write([entries[x]["row"] for x in inputs])
        self.release()
        remove_own(self.folder, (CHUNK, MARKER, LOCK, re.compile(re.escape(KEY)),
                                 re.compile(r"\.lock")))
        return any(entries[x]["failed"] for x in inputs)


class ScoringJob:
    """inference.py's side of a sharded run. ``take(items)`` (every process, once, with every
    input) -> the indices this process scores (its share, less what the parts already hold);
    ``add`` each result; ``run(work)`` runs the scoring and, where this process merges, writes
    ``--output`` with ``write(rows)``."""

    def __init__(self, plan, output, key, write, names=None):
        self.plan, self.output, self.key, self.write = plan, output, key, write
        self.names = names
        self.folder = output + ".parts"
        self.parts = self.inputs = None

    def take(self, items):
        self.inputs = list(items)
        self.parts = Parts(self.folder, self.key, self.plan)
        mine = share(self.plan, self.inputs)
        done = self.parts.rows()
        return [i for i in mine if self.inputs[i] not in done]

    def add(self, item, row, failed):
        self.parts.add(item, row, failed)

    def run(self, work):
        """Returns the exit status: 1 where an input failed (of every input where this process
        merges, of its own share for a separate shard), else 0."""
        def share_work():
            try:
                work()
                self.parts.finish()
            finally:
                if self.parts is not None:
                    self.parts.flush()  # what is done stays done, also when interrupted
                    if not self.plan.merges:
                        self.parts.release()
        try:
            self.plan.run(share_work, self.names)
            if not self.plan.merges:
                if not self.plan.ranks:
                    print(f"shard {self.plan.label} finished: its rows are in {self.folder}; "
                          "when every shard has finished, run the same command with --merge "
                          "(without --shard)", file=sys.stderr)
                self.plan.agree()  # the merge's outcome
                return int(self.parts.failed and not self.plan.ranks)
            try:
                failed = self.parts.merge(self.inputs, self.write)
            except Exception as exc:
                self.plan.agree(_said(exc, self.names))
                raise
            self.plan.agree()
            if failed and self.plan.ranks:
                # torchrun takes any other exit status than 0 for a crashed rank: the failed
                # inputs are told by their rows and this line
                print("some inputs could not be scored: their rows in --output say why",
                      file=sys.stderr)
                return 0
            return int(failed)
        finally:
            self.plan.close()


def scoring_job(args, key, write, names=None):
    """inference.py's sharded run for ``args`` (None for a plain run, or a ``--merge``): needs
    ``--output`` (the parts are kept beside it); ``--frames_output`` is not merged. ``key()``
    gives what makes the rows (asked for a sharded run only)."""
    plan = plan_from(args.shard, args.merge)
    sharded = plan is not None or args.merge
    if sharded and not args.output:
        what = "--merge" if args.merge else f"--shard {args.shard}" if args.shard else "torchrun"
        if plan is not None:
            plan.close()
        raise UserError(f"{what}: give --output FILE (the rows of every shard are kept beside it "
                        "and merged into it)")
    if sharded and args.frames_output:
        if plan is not None:
            plan.close()
        raise UserError("--frames_output is written by one process only: run it without "
                        "torchrun, --shard or --merge")
    if plan is None:
        return None
    args.device = rank_device(plan, args.device)
    try:
        return ScoringJob(plan, args.output, key(), write, names)
    except BaseException:
        plan.close()
        raise


def merge_scores(output, key, inputs, write):
    """inference.py --merge: the rows of every shard into ``output`` (``write(rows)``); returns
    the exit status."""
    folder = output + ".parts"
    if not os.path.isdir(folder):
        raise UserError(f"--merge: no parts beside --output {output} ({folder}): run every shard "
                        "(--shard K/N) first")
    parts = Parts(folder, key)
    lock = FolderLock(folder, "--output", "wait for the other --merge")
    try:
        return int(parts.merge(inputs, write))
    finally:
        lock.release()


# -- extraction: video folders marked .done, shard records in <out>/.shards -----------------------

def _write_record(out, plan, failed):
    atomic_write_text(os.path.join(out, SHARDS, f"{plan.name}.done"),
                      json.dumps({"failed": sorted(failed)}) + "\n")


def _records(out, n):
    """The failed videos recorded by the shards of N."""
    failed = set()
    for k in range(1, n + 1):
        path = os.path.join(out, SHARDS, f"{k}-of-{n}.done")
        try:
            with open(path, encoding="utf-8") as fh:
                failed.update(json.load(fh)["failed"])
        except (OSError, ValueError, TypeError, KeyError):
            raise UserError(f"{path} is not a shard record this project wrote: move it "
                            "away") from None
    return failed


def merge_extraction(out, videos):
    """--merge (and rank 0 under torchrun): when every shard of one N has finished and every
    video of ``videos`` is done or recorded failed, ``manifest.jsonl`` is written (atomically)
    and the shard records removed. Returns the number of manifest lines."""
    from .manifest import DONE, state_folder, write_manifest
    from .video import video_id
    records = os.path.join(out, SHARDS)
    n = finished_set(_markers(records), records)
    failed = _records(out, n)
    missing = [v for v in videos if video_id(v) not in failed
               and not os.path.isfile(os.path.join(state_folder(out, video_id(v)), DONE))]
    if missing:
        shown = ", ".join(os.path.basename(v) for v in missing[:3])
        raise UserError(f"--merge: {len(missing)} of {len(videos)} videos are not done in {out} "
                        f"({shown}{', ...' if len(missing) > 3 else ''}): run the shards again")
    lock = FolderLock(out, "out")
    try:
        lines = write_manifest(out)
    finally:
        lock.release()
    remove_own(records, (MARKER, LOCK))
    return lines


def verify_done(out, vid):
    """A video folder marked done whose manifest lines or crop files are not all there (a crop
    removed, a file cut to nothing) is marked at work again, so that it is redone (only its own
    frame files are replaced: faces.extract). Returns whether it was."""
    from .manifest import DONE, VIDEO_MANIFEST, WORKING, state_folder, video_of_file
    folder = state_folder(out, vid)
    if not os.path.isfile(os.path.join(folder, DONE)):
        return False
    try:
        with open(os.path.join(folder, DONE), encoding="utf-8") as fh:
            count = int(fh.read().split()[0])
        with open(os.path.join(folder, VIDEO_MANIFEST), encoding="utf-8") as fh:
            files = [json.loads(line)["file"] for line in fh if line.strip()]
        whole = len(files) == count and all(
            video_of_file(f) == vid and os.path.getsize(os.path.join(out, f)) > 0 for f in files)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        whole = False
    if not whole:
        open(os.path.join(folder, WORKING), "w").close()
        os.remove(os.path.join(folder, DONE))
        print(f"video {vid}: marked done, but its crops or manifest lines are not all there: "
              "redone", file=sys.stderr)
    return not whole


def extract_share(plan, videos, out, meta, run, names=None):
    """One shard of an extraction: this shard's videos by ``run(videos)`` (faces.extract, which
    writes the metadata, skips done videos, and leaves the manifest to the merge), a record of
    its failed videos, then (rank 0 under torchrun) the merge. Returns (summary of every rank,
    manifest lines or None)."""
    from .manifest import DONE, state_folder, write_meta
    from .video import video_id

    def work():
        os.makedirs(os.path.join(out, SHARDS), exist_ok=True)
        lock = FolderLock(os.path.join(out, SHARDS), "out", "give another --shard",
                          name=f".lock-{plan.name}")
        try:
            write_meta(out, meta)  # other settings are refused before any work
            mine = [videos[i] for i in share(plan, videos)]
            for v in mine:
                verify_done(out, video_id(v))
            summary = run(mine)
            failed = [video_id(v) for v in mine
                      if not os.path.isfile(os.path.join(state_folder(out, video_id(v)), DONE))]
            _write_record(out, plan, failed)
            return summary
        finally:
            lock.release()
    try:
        summaries = plan.run(work, names)
        lines = None
        if plan.merges:
            try:
                lines = merge_extraction(out, videos)
            except Exception as exc:
                plan.agree(_said(exc, names))
                raise
        plan.agree()
        total = {}
        for s in summaries:
            for k, v in s.items():
                total[k] = total.get(k, 0) + v
        return total, lines
    finally:
        plan.close()

"""WildDeepfake: ``root/<split>/real.pickle`` and ``fake.pickle``, image paths relative to
``root/<split>``, built from ``<split>/{real,fake}/<video>/<frame>``."""
import os

from errors import UserError, flags

from .base import Item
from .common import check_entries, choice, is_image, require_dir, video_of, walk_images
from .index import load_pickle_index, save_pickle_index
from .registry import Layout, register_layout


def read(cfg, rng):
    split = choice(cfg, "split", ("train", "test"))
    base = os.path.join(cfg["root"], split)
    require_dir(base, "WildDeepfake's <split>/real.pickle and fake.pickle")
    lists = {}
    for kind in ("real", "fake"):
        index = os.path.join(base, f"{kind}.pickle")
        lists[kind] = [os.path.join(base, p)
                       for p in check_entries(load_pickle_index(index), index, pairs=False)]
    reals, fakes = lists["real"], lists["fake"]
    num = cfg.get(f"num_image_{split}")
    if num:
        reals = sorted(rng.sample(reals, min(len(reals), int(num) // 3)))
        fakes = sorted(rng.sample(fakes, min(len(fakes), int(num) - int(num) // 3)))
    return [Item(p, 0, video_of(os.path.relpath(p, base))) for p in reals] + \
           [Item(p, 1, video_of(os.path.relpath(p, base))) for p in fakes]


def build_wilddeepfake(root):
    """``<split>/real.pickle`` and ``fake.pickle`` from ``<split>/{real,fake}/<video>/*``. A list
    without any image is not written (an existing index is never replaced by an empty one; its
    count is 0); when all four are empty nothing is written and it is an error."""
    counts, lists = {}, {}
    for split in ("train", "test"):
        base = os.path.join(root, split)
        if not os.path.isdir(base):
            raise UserError(f"WildDeepfake split folder not found: {base}")
        for kind in ("real", "fake"):
            partial = incomplete_archives(os.path.join(base, kind))
            paths = [os.path.relpath(p, base).replace(os.sep, "/")
                     for p in walk_images(os.path.join(base, kind))
                     if not any(p.startswith(f + os.sep) for f in partial)]
            if paths:
                lists[os.path.join(base, f"{kind}.pickle")] = paths
            counts[f"{split}/{kind}"] = len(paths)
    if not lists:
        raise UserError(f"WildDeepfake: no images under {root}/<split>/<real|fake>/; "
                        "no index written")
    for path, paths in lists.items():
        save_pickle_index(paths, path)
    return counts


ARCHIVE_DONE = ".unpacked"
ARCHIVE_WORKING = ".unpacking"
ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")


def incomplete_archives(folder):
    """The archive folders under ``folder`` whose unpacking did not finish (marked
    ``.unpacking``): never indexed."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, d) for d in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, d, ARCHIVE_WORKING))]


def archive_targets(names):
    """``{archive file name: its folder name}``: the name without its archive extension
    (``1.part1.tar.gz`` -> ``1.part1``); two archives that would share one (``5.tar``,
    ``5.tar.gz``) keep their full file names, so that neither is taken for the other."""
    stems = {n: next(n[:-len(e)] for e in ARCHIVE_EXTS if n.endswith(e)) for n in names
             if n.endswith(ARCHIVE_EXTS)}
    return {n: (n if list(stems.values()).count(stem) > 1 else stem)
            for n, stem in stems.items()}


def _read_to_end(tar):
    """Read what is left of the archive's stream: a gzip stream is verified (length, CRC) only
    at its very end, which iterating over the members does not reach."""
    fobj = getattr(tar, "fileobj", None)
    if fobj is not None:
        while fobj.read(1 << 20):
            pass


def _archive_folders(archives):
    """``{(split, kind): folder}`` of the distribution: ``real_train``, ``fake_test``, ... (a
    space or a hyphen instead of the underscore is accepted, as the dataset's page writes them)."""
    found = {}
    for name in sorted(os.listdir(archives)):
        key = name.lower().replace(" ", "_").replace("-", "_")
        for kind in ("real", "fake"):
            for split in ("train", "test"):
                if key == f"{kind}_{split}" and os.path.isdir(os.path.join(archives, name)):
                    found[(split, kind)] = os.path.join(archives, name)
    return found


def _safe_member(member):
    """The relative path to extract a member to, or None: only regular image files, no absolute
    path, no '..', no links or devices."""
    name = member.name.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not member.isfile() or name.startswith("/") or ".." in parts or not parts:
        return None
    return "/".join(parts) if is_image(parts[-1]) else None


def _marker_clash(rel):
    """Whether an archive member's path would take the place of this tool's markers."""
    return rel.split("/")[0] in (ARCHIVE_DONE, ARCHIVE_WORKING)


def unpack_archives(archives, root):
    """WildDeepfake as distributed (``<kind>_<split>/<n>.tar.gz``, each holding face-sequence
    folders of frames) -> ``root/<split>/<kind>/<n>/<sequence>/<frame>``, the layout the loader
    reads (a video = one face sequence). Only image files are extracted, never a path outside the
    archive's own folder. Each archive's folder is marked as this tool's (``.unpacking``, then
    ``.unpacked``): a finished one is skipped, an interrupted one redone, and a folder of that name
    that the tool did not make is left alone and reported. Returns (archives unpacked, skipped,
    problems)."""
    import tarfile
    import zlib

    from fileio import atomic_write, check_output_dir
    if not os.path.isdir(archives):
        raise UserError(f"archives {archives}: not a folder", arg="archives")
    check_output_dir(root, "root")  # before anything is made under it
    folders = _archive_folders(archives)
    if not folders:
        raise UserError(f"archives {archives}: no real_train, real_test, fake_train or "
                        "fake_test folder (WildDeepfake as distributed)", arg="archives")
    done = skipped = 0
    problems = []
    for (split, kind), folder in sorted(folders.items()):
        for name, stem in sorted(archive_targets(os.listdir(folder)).items()):
            archive = os.path.join(folder, name)
            target = os.path.join(root, split, kind, stem)
            if os.path.isfile(os.path.join(target, ARCHIVE_DONE)):
                skipped += 1
                continue
            if os.path.exists(target) and not os.path.isfile(os.path.join(target, ARCHIVE_WORKING)):
                problems.append(f"{target} exists and was not made by this tool; {archive} not "
                                "unpacked")
                continue
            try:
                os.makedirs(target, exist_ok=True)
                open(os.path.join(target, ARCHIVE_WORKING), "w").close()
            except OSError as exc:
                problems.append(f"{archive}: cannot make {target} ({exc.strerror or exc}); not "
                                "unpacked")
                continue
            count, clashes = 0, []
            try:
                with tarfile.open(archive) as tar:
                    for member in tar:
                        rel = _safe_member(member)
                        if rel is None:
                            continue
                        if _marker_clash(rel):
                            clashes.append(rel)  # never where this tool's markers go
                            continue
                        data = tar.extractfile(member).read()
                        out = os.path.join(target, *rel.split("/"))
                        os.makedirs(os.path.dirname(out), exist_ok=True)
                        atomic_write(out, lambda fh, d=data: fh.write(d), mode="wb")
                        count += 1
                    _read_to_end(tar)  # unpacked = read to its end and verified
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                problems.append(f"{archive}: {' '.join(str(exc).split()) or type(exc).__name__}"
                                " (not unpacked: its folder stays marked .unpacking and is not "
                                "indexed; the next run redoes it)")
                continue  # the working marker stays: the next run redoes this archive
            if clashes:
                marker = clashes[0].split("/")[0]
                problems.append(f"{archive}: {len(clashes)} member(s) under {marker}/ (first: "
                                f"{clashes[0]}), the name of this tool's marker; not extracted, "
                                "the rest is")
            with open(os.path.join(target, ARCHIVE_DONE), "w") as fh:
                fh.write(f"{count}\n")
            os.remove(os.path.join(target, ARCHIVE_WORKING))
            done += 1
    return done, skipped, problems


def _add_arguments(p):
    p.add_argument("--root", required=True, help="the folder holding train/ and test/")
    p.add_argument("--archives", help="first unpack WildDeepfake as distributed: the folder "
                                      "holding real_train/, real_test/, fake_train/, fake_test/ "
                                      "of <n>.tar.gz archives")


def _build(args):
    lines = []
    if args.archives:
        with flags(archives="--archives"):
            done, skipped, problems = unpack_archives(args.archives, args.root)
        lines += [f"problem: {p}" for p in problems]
        lines.append(f"archives: {done} unpacked, {skipped} already unpacked, "
                     f"{len(problems)} with problems")
    for split in ("train", "test"):
        for kind in ("real", "fake"):
            lines += [f"problem: {f}: an unpacking that did not finish; not indexed"
                      for f in incomplete_archives(os.path.join(args.root, split, kind))
                      if not any(f in line for line in lines)]
    built = build_wilddeepfake(args.root)
    return lines + [f"{name}.pickle: {n} frames" for name, n in built.items()]


register_layout(Layout("WildDeepfake", read,
                       keys={"num_image_train": "posint?", "num_image_test": "posint?"},
                       index_name="wilddeepfake", add_arguments=_add_arguments, build_index=_build,
                       description="writes <split>/real.pickle and fake.pickle"))

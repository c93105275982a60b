"""The jobs of the page: one SQLite table (``<data>/jobs.sqlite3``) and one folder per job
(``<data>/jobs/<id>/``), named by the job's id, never by an uploaded file's name.

A job is ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``; a job that was
running when the server stopped is ``interrupted`` on the next start (and can be run again). The
table is the queue: a worker claims the oldest queued job in one transaction, so several workers
never take the same job. Every connection is opened per call (threads and processes alike).
"""
import json
import os
import re
import shutil
import sqlite3
import time
import uuid

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled", "interrupted")
ID = re.compile(r"^[0-9a-f]{32}$")
DB_NAME = "jobs.sqlite3"
JOBS_DIR = "jobs"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    input TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    state TEXT NOT NULL,
    settings TEXT NOT NULL,
    progress TEXT,
    error TEXT,
    result TEXT,
    extra TEXT,
    worker INTEGER
)
"""
JSON_COLUMNS = ("settings", "progress", "result", "extra")


def new_id():
    return uuid.uuid4().hex


def valid_id(job_id):
    return isinstance(job_id, str) and bool(ID.match(job_id))


class JobStore:
    """The jobs table and folders under ``data`` (made when missing)."""

    def __init__(self, data):
        self.data = os.path.abspath(data)
        self.jobs_dir = os.path.join(self.data, JOBS_DIR)
        os.makedirs(self.jobs_dir, exist_ok=True)
        self.path = os.path.join(self.data, DB_NAME)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    def _db(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return _Closing(db)

    # ----------------------------------------------------------------- folders
    def folder(self, job_id):
        """The folder of a job: ``<data>/jobs/<id>``; an id that is not one is a ValueError (no
        path is ever built from anything else)."""
        if not valid_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return os.path.join(self.jobs_dir, job_id)

    def make_folder(self, job_id):
        path = self.folder(job_id)
        os.makedirs(path)  # a new id: a folder that cannot exist yet
        return path

    def remove_folder(self, job_id):
        """Remove the job's own folder and nothing else: ``<data>/jobs/<id>``, a real folder (a
        link in its place is removed as a link, never followed)."""
        path = self.folder(job_id)
        if os.path.islink(path):
            os.remove(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)  # the job's own folder, made by this store

    # ----------------------------------------------------------------- rows
    @staticmethod
    def _row(row):
        if row is None:
            return None
        job = dict(row)
        for key in JSON_COLUMNS:
            job[key] = json.loads(job[key]) if job[key] is not None else None
        return job

    def create(self, job_id, name, kind, input_name, settings):
        with self._db() as db:
            db.execute("INSERT INTO jobs (id, name, kind, input, created, state, settings) "
                       "VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                       (job_id, name, kind, input_name, time.time(), json.dumps(settings)))
        return self.get(job_id)

    def get(self, job_id):
        if not valid_id(job_id):
            return None
        with self._db() as db:
            return self._row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list(self):
        with self._db() as db:
            return [self._row(r) for r in
                    db.execute("SELECT * FROM jobs ORDER BY created DESC, id").fetchall()]

    def state(self, job_id):
        with self._db() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["state"] if row else None

    def claim(self, worker):
        """The oldest queued job, now ``running`` for ``worker`` (a process id); None if none."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT id FROM jobs WHERE state = 'queued' "
                                 "ORDER BY created, id LIMIT 1").fetchone()
                if row is None:
                    return None
                db.execute("UPDATE jobs SET state = 'running', started = ?, worker = ?, "
                           "progress = NULL, error = NULL WHERE id = ?",
                           (time.time(), worker, row["id"]))
            finally:
                db.execute("COMMIT")
        return self.get(row["id"])

    def set_progress(self, job_id, progress):
        with self._db() as db:
            db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
                       (json.dumps(progress), job_id))

    def publish(self, job_id, result, extra):
        """The verdict of a job that is still running (its evidence is being made)."""
        with self._db() as db:
            db.execute("UPDATE jobs SET result = ?, extra = ? WHERE id = ? AND state = 'running'",
                       (json.dumps(result), json.dumps(extra), job_id))

    def finish(self, job_id, result, extra):
        """``done`` with its record, if it is still running (a cancel wins)."""
        with self._db() as db:
            cur = db.execute("UPDATE jobs SET state = 'done', finished = ?, result = ?, extra = ?, "
                             "worker = NULL WHERE id = ? AND state = 'running'",
                             (time.time(), json.dumps(result), json.dumps(extra), job_id))
            return cur.rowcount == 1

    def fail(self, job_id, reason):
        with self._db() as db:
            db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ?, worker = NULL, "
                       "result = NULL WHERE id = ? AND state = 'running'",
                       (time.time(), reason, job_id))

    def release(self, job_id):
        """The worker is done with a job it stopped (cancelled): its folder is free."""
        with self._db() as db:
            db.execute("UPDATE jobs SET worker = NULL WHERE id = ?", (job_id,))

    def cancel(self, job_id):
        """``cancelled`` if queued or running; True if it was."""
        with self._db() as db:
            cur = db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, result = NULL, "
                             "error = 'cancelled by the user' "
                             "WHERE id = ? AND state IN ('queued', 'running')",
                             (time.time(), job_id))
            return cur.rowcount == 1

    def rerun(self, job_id):
        """A finished job that has no record (failed, cancelled, interrupted) queued again."""
        with self._db() as db:
            cur = db.execute("UPDATE jobs SET state = 'queued', created = ?, started = NULL, "
                             "finished = NULL, progress = NULL, error = NULL, result = NULL, "
                             "extra = NULL WHERE id = ? AND worker IS NULL AND state IN "
                             "('failed', 'cancelled', 'interrupted')", (time.time(), job_id))
            return cur.rowcount == 1

    def delete(self, job_id):
        """The row and the job's folder; only a job no worker holds."""
        with self._db() as db:
            cur = db.execute("DELETE FROM jobs WHERE id = ? AND worker IS NULL AND state NOT IN "
                             "('queued', 'running')", (job_id,))
            gone = cur.rowcount == 1
        if gone:
            self.remove_folder(job_id)
        return gone

    def interrupt_running(self):
        """On start: the jobs a previous server left running are ``interrupted``."""
        with self._db() as db:
            cur = db.execute("UPDATE jobs SET state = 'interrupted', finished = ?, worker = NULL, "
                             "result = NULL, error = 'the server stopped while this job ran' "
                             "WHERE state = 'running'", (time.time(),))
            db.execute("UPDATE jobs SET worker = NULL WHERE worker IS NOT NULL")
            return cur.rowcount

    def fail_worker(self, worker, reason):
        """The jobs of a worker process that died: ``failed`` with ``reason``."""
        with self._db() as db:
            cur = db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ?, "
                             "worker = NULL, result = NULL WHERE worker = ? AND state = 'running'",
                             (time.time(), reason, worker))
            db.execute("UPDATE jobs SET worker = NULL WHERE worker = ?", (worker,))
            return cur.rowcount


class _Closing:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        return self.db

    def __exit__(self, *exc):
        self.db.close()

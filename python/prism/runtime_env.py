"""Runtime environments, as Ray's ``runtime_env``: ``env_vars`` (set in the processes that run
a job's, task's or actor's code) and ``working_dir`` (a folder copied into the node's session
and made the working directory, and the first entry of ``sys.path``, of those processes).

A job's runtime environment (``prism.init(runtime_env=...)``) applies to every task and actor of
the job; one given in ``.options(runtime_env=...)`` is laid over it: its ``env_vars`` are added to
the job's (its own values win), its ``working_dir`` replaces the job's. Processes with different
environments are not shared: such tasks get workers of their own.
"""

import fnmatch
import hashlib
import os
import shutil

# Ray's limit on a working_dir package.
MAX_WORKING_DIR_BYTES = 500 << 20
_SUPPORTED = ("env_vars", "working_dir", "excludes", "config")
_WORKING_DIR_VAR = "RUNTIME_ENV_WORKING_DIR"  # (PRISM_* variables are the runtime's own)


class RuntimeEnv(dict):
    """A runtime environment as a dict (``RuntimeEnv(env_vars={...}, working_dir=...)``)."""

    def __init__(self, *, env_vars=None, working_dir=None, excludes=None, **other):
        super().__init__(**other)
        if env_vars is not None:
            self["env_vars"] = env_vars
        if working_dir is not None:
            self["working_dir"] = working_dir
        if excludes is not None:
            self["excludes"] = excludes


def check(runtime_env, where):
    """The runtime environment as a plain dict, or a clear error about what it cannot hold."""
    if runtime_env is None:
        return {}
    if not isinstance(runtime_env, dict):
        raise TypeError(f"{where}: runtime_env must be a dict, not a {type(runtime_env).__name__}")
    unknown = sorted(k for k in runtime_env if k not in _SUPPORTED and runtime_env[k] is not None)
    if unknown:
        raise ValueError(f"{where}: prism's runtime_env supports env_vars and working_dir (with excludes), "
                         f"not {', '.join(unknown)}; install packages into the interpreter that runs prism")
    env = {}
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, dict):
            raise TypeError(f"{where}: runtime_env['env_vars'] must be a dict of str to str")
        for k, v in env_vars.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"{where}: runtime_env['env_vars'] must map str to str, not {k!r}: {v!r}")
        env["env_vars"] = dict(env_vars)
    working_dir = runtime_env.get("working_dir")
    if working_dir is not None:
        if not isinstance(working_dir, (str, os.PathLike)):
            raise TypeError(f"{where}: runtime_env['working_dir'] must be a local folder's path")
        path = os.path.abspath(os.fspath(working_dir))
        if not os.path.isdir(path):
            raise ValueError(f"{where}: working_dir {path} is not a folder (prism takes local folders only)")
        env["working_dir"] = path
        excludes = runtime_env.get("excludes") or []
        if not isinstance(excludes, (list, tuple)) or not all(isinstance(e, str) for e in excludes):
            raise TypeError(f"{where}: runtime_env['excludes'] must be a list of patterns")
        env["excludes"] = list(excludes)
    return env


def _files(root, excludes):
    """The files under root to copy, as relative paths, without those matching `excludes`
    (patterns matched against the relative path and against each name, as .gitignore does)."""
    out = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        keep = []
        for d in sorted(dirs):
            rel = os.path.normpath(os.path.join(rel_folder, d))
            if not _excluded(rel, d, excludes) and d != "__pycache__":
                keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            rel = os.path.normpath(os.path.join(rel_folder, f))
            if not _excluded(rel, f, excludes):
                out.append(rel)
    return out


def _excluded(rel, name, excludes):
    for pattern in excludes:
        p = pattern.rstrip("/")
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p.lstrip("/")):
            return True
    return False


def prepare(env, session_dir):
    """Copies a working_dir into the session (once per content) and returns the environment as
    workers take it: {"env_vars": {...}, "working_dir": the copy}."""
    out = {}
    if env.get("env_vars"):
        out["env_vars"] = dict(env["env_vars"])
    if env.get("working_dir"):
        source = env["working_dir"]
        files = _files(source, env.get("excludes") or [])
        digest = hashlib.sha1()
        total = 0
        for rel in files:
            full = os.path.join(source, rel)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            total += os.path.getsize(full)
            if total > MAX_WORKING_DIR_BYTES:
                raise ValueError(f"working_dir {source} holds more than {MAX_WORKING_DIR_BYTES >> 20} MiB; "
                                 "leave large files out with runtime_env['excludes']")
            digest.update(rel.encode() + b"\0")
            with open(full, "rb") as f:
                digest.update(f.read())
        target = os.path.join(session_dir, "runtime_resources", "working_dir_" + digest.hexdigest()[:16])
        if not os.path.isdir(target):
            staging = target + f".tmp{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            for rel in files:
                full = os.path.join(source, rel)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                dest = os.path.join(staging, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(full, dest)
            os.makedirs(staging, exist_ok=True)
            try:
                os.rename(staging, target)
            except OSError:  # another process copied the same content first
                shutil.rmtree(staging, ignore_errors=True)
        _publish(os.path.basename(target), target)
        out["working_dir"] = target
    return out


# A working_dir travels to other nodes through the control service's key-value table: packed
# (zip) once per content, in chunks of at most this many bytes (each one message to the head).
_KV_NAMESPACE = "runtime_env"
_CHUNK_BYTES = 8 << 20
_published = set()  # names this process published (or found published)


def _publish(name, folder):
    """Packs `folder` into the cluster's key-value table under `name`, unless it is there."""
    import io
    import zipfile
    from prism import _prism
    from prism._private import worker
    if name in _published:
        return
    if worker.call(_prism.kv_get, _KV_NAMESPACE, name.encode()) is not None:
        _published.add(name)
        return
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for root, _, names in os.walk(folder):
            for n in sorted(names):
                full = os.path.join(root, n)
                z.write(full, os.path.relpath(full, folder))
    data = buf.getvalue()
    chunks = [data[i:i + _CHUNK_BYTES] for i in range(0, len(data), _CHUNK_BYTES)] or [b""]
    for i, chunk in enumerate(chunks):
        worker.call(_prism.kv_put, _KV_NAMESPACE, f"{name}/{i}".encode(), chunk, True)
    # The count last: a reader that finds it finds every chunk.
    worker.call(_prism.kv_put, _KV_NAMESPACE, name.encode(), str(len(chunks)).encode(), True)
    _published.add(name)


def _materialize(name, session_dir):
    """This node's copy of the working_dir published under `name`, unpacked from the key-value
    table into the session folder once (concurrent workers race harmlessly)."""
    import io
    import zipfile
    from prism import _prism
    target = os.path.join(session_dir, "runtime_resources", name)
    if os.path.isdir(target):
        return target
    count = _prism.kv_get(_KV_NAMESPACE, name.encode())
    if count is None:
        raise RuntimeError(f"working_dir {name} is not in this cluster's key-value table (its driver did not "
                           "publish it)")
    chunks = [_prism.kv_get(_KV_NAMESPACE, f"{name}/{i}".encode()) for i in range(int(count))]
    if any(c is None for c in chunks):
        raise RuntimeError(f"working_dir {name}: a part of it is missing from this cluster's key-value table")
    data = b"".join(chunks)
    staging = target + f".tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for member in z.namelist():
            dest = os.path.realpath(os.path.join(staging, member))
            if not dest.startswith(os.path.realpath(staging) + os.sep):
                raise RuntimeError(f"working_dir {name}: a packed path leaves the folder: {member!r}")
        z.extractall(staging)
    try:
        os.rename(staging, target)
    except OSError:  # another worker unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def merge(job_env, task_env):
    """A task's or actor's prepared environment laid over its job's."""
    if not task_env:
        return job_env
    out = dict(job_env)
    if task_env.get("env_vars"):
        out["env_vars"] = {**job_env.get("env_vars", {}), **task_env["env_vars"]}
    if task_env.get("working_dir"):
        out["working_dir"] = task_env["working_dir"]
    return out


def worker_env(prepared):
    """The environment variables of the processes that run under `prepared`."""
    env = dict(prepared.get("env_vars") or {})
    if prepared.get("working_dir"):
        env[_WORKING_DIR_VAR] = prepared["working_dir"]
    return env


def enter_working_dir():
    """In a worker process, before its first task: makes the job's (or task's) working_dir its
    working directory and the first entry of sys.path. The copy is this node's: one made in
    another node's session is unpacked here from the cluster's key-value table first."""
    import sys
    path = os.environ.get(_WORKING_DIR_VAR)
    if not path:
        return
    session = os.environ.get("PRISM_SESSION_DIR")
    if session and os.path.dirname(path) != os.path.join(session, "runtime_resources"):
        path = _materialize(os.path.basename(path), session)
    if os.path.isdir(path):
        os.chdir(path)
        if path not in sys.path:
            sys.path.insert(0, path)


__all__ = ["RuntimeEnv"]

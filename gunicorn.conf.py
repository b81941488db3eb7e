"""gunicorn settings for the heart-rate service; ``./ops/serve`` starts gunicorn with it.

Command-line flags override anything here (``--bind``, ``--workers`` ...). Nothing here
imports the service or Polars: state is created in each worker after fork. (The master
imports the worker class, ``service.connections``: settings and errors only, no state.)
"""

import ctypes
import fcntl
import os
import shutil
import socket
import sys
import tempfile

_METRICS_PREFIX = "hr-prometheus-"
# Polars' allocator: two arenas (by default four a core, and a query's reads run on a dozen
# of Polars' I/O threads, spread over the arenas, each keeping its own partly used pages)
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2"
# glibc's malloc in each worker, by mallopt parameter: at most two arenas (one per worker
# thread by default, each keeping its own freed space) and a fixed mmap threshold (a
# freed large buffer goes back to the system at once, instead of raising the threshold
# until request bodies and WAL reads fragment the heap); each yields to its MALLOC_*_
# variable when that is set
GLIBC_MALLOPT = {"MALLOC_ARENA_MAX": (-8, 2), "MALLOC_MMAP_THRESHOLD_": (-3, 128 * 1024)}
# held (flock) by the master and, through fork, its workers: while any of them lives,
# the directory is in use; once the lock is free, every process writing there is gone
_OWNER_LOCK = ".owner.lock"


def _remove_abandoned_metric_dirs(parent: str) -> None:
    """Delete the metric dirs of servers that died without cleaning up (kill -9): each
    holds its files in shared memory until the next reboot otherwise."""
    for entry in os.scandir(parent):
        if not entry.name.startswith(_METRICS_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, _OWNER_LOCK), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # no lock file: not ours to judge (or still being created)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a live server's
        else:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)


def _own_metrics_dir(parent: str | None) -> str:
    """A fresh metrics dir, locked for as long as this server's processes live."""
    _remove_abandoned_metric_dirs(parent or tempfile.gettempdir())
    directory = tempfile.mkdtemp(prefix=_METRICS_PREFIX, dir=parent)
    # locked before it gets its name, so no other server ever sees it unlocked
    pending = os.path.join(directory, _OWNER_LOCK + ".new")
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(pending, os.path.join(directory, _OWNER_LOCK))
    return directory  # fd stays open: the forked workers share the lock


# multiprocess metrics need their directory before prometheus_client is first imported
# prometheus_client writes them through mmap: on a full filesystem a worker dies of SIGBUS,
# so they go to shared memory (/dev/shm) rather than a disk the data may fill
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir(_shm)
    _OWN_METRICS_DIR = True
else:
    _OWN_METRICS_DIR = False

wsgi_app = "service.app:app"
bind = os.environ.get("HR_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("HR_WORKERS", "0")) or max(2, os.cpu_count() or 1)
# uvicorn's worker with bounded header blocks (431 over 16 KiB, 408 after
# HR_HEADER_TIMEOUT_S) and the idle timer below from a connection's start
worker_class = "service.connections.Worker"
# each worker opens its own listening socket (SO_REUSEPORT) and the kernel spreads new
# connections over them by address hash; on one shared socket the first worker to wake
# takes a burst of connections (62 of 64 seen), leaving the other worker idle. A fixed
# port is needed: with port 0 every worker would listen on a port of its own.
reuse_port = True
preload_app = False  # Polars pools and file locks must be created after fork
max_requests = 0  # every new worker pid adds metric files that each scrape reads
timeout = 30
graceful_timeout = 30
keepalive = 5  # seconds an idle connection is kept (uvicorn's timeout_keep_alive)
control_socket_disable = True
errorlog = "-"
loglevel = os.environ.get("HR_LOG_LEVEL", "info").lower()

# one log stream for gunicorn, uvicorn and the service: JSON lines unless on a terminal
_format = os.environ.get("HR_LOG_FORMAT", "auto").lower()
_json = _format == "json" or (_format == "auto" and not os.isatty(2))
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "service.logs.JsonFormatter"},
        "text": {
            "()": "service.logs.TextFormatter",  # escapes control characters from requests
            "fmt": "%(asctime)s [%(process)d] %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json" if _json else "text",
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        name: {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False}
        for name in ("gunicorn.error", "uvicorn", "uvicorn.error", "service")
    },
}


def _exit_unless_free(server):
    """With reuse_port only the workers bind, and gunicorn respawns a worker that cannot:
    a port held by another program would loop forever instead of failing at start."""
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket: gunicorn's master binds it
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                server.log.error("Cannot listen at %s:%s: %s", *address[:2], exc.strerror)
                on_exit(server)
                sys.exit(1)


def _check_access_control(server):
    """Refuse to serve beyond loopback without keys; tell the workers where we listen."""
    from service.auth.bind import listen_scope, refusal
    from service.config import ConfigError, Settings

    try:
        problem = refusal(Settings.from_env(), list(server.cfg.address))
    except ConfigError as exc:
        problem = str(exc)
    if problem:
        server.log.error("Not starting: %s", problem)
        on_exit(server)
        sys.exit(1)
    # inherited by the workers; overrides any value from the environment
    os.environ["HR_LISTEN"] = listen_scope(server.cfg.address)


def on_starting(server):
    _check_access_control(server)
    if server.cfg.reuse_port:
        _exit_unless_free(server)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name != _OWNER_LOCK:
            os.unlink(os.path.join(directory, name))


def post_fork(server, worker):
    # with reuse_port the master holds no socket ("Listening at:" stays empty): each worker
    # says where its own socket listens
    server.log.info(
        "Worker %s listening at: %s", os.getpid(), ",".join(str(s) for s in worker.sockets)
    )
    # Polars reads this once at import: share the cores between the workers
    cores = os.cpu_count() or 1
    os.environ.setdefault("POLARS_MAX_THREADS", str(max(1, cores // server.cfg.workers)))
    # Polars' allocator (jemalloc) otherwise keeps freed pages until the same arena is
    # busy again: a query's working memory then stays resident; a background thread
    # returns pages idle for a second (read once, when Polars is first imported)
    os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)
    _tune_malloc()
    # lets a worker notice that the master died (kill -9) and stop gracefully
    os.environ["HR_MASTER_PID"] = str(server.pid)


def _tune_malloc():
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only: elsewhere the defaults stay
    except (OSError, AttributeError):
        return
    for variable, (parameter, value) in GLIBC_MALLOPT.items():
        if variable not in os.environ:
            mallopt(parameter, value)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

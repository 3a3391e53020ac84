"""Where the units of an audit run: in this process, on a local process pool, or on a Ray cluster.

Every executor takes the same list of :class:`~auditor.pipeline.units.Unit` and returns their outcomes in
the same order (see :func:`auditor.pipeline.units.run_unit`), so splitting and merging is one code path
whatever runs the units.  An executor is opened once per audit and keeps its workers across the
phases of the audit (clean evaluation, searches, statistics), so the sessions a worker built for
a profile serve all its units.

* :class:`SerialExecutor` runs the units one after the other (``--jobs 1``).
* :class:`PoolExecutor` runs them on ``jobs`` local processes (``--jobs N``).
* :class:`RayExecutor` runs them as Ray tasks (``--ray [ADDRESS]``); the audit's context (model,
  profiles, scenario, data) is put in the object store once.  A task whose worker died is retried
  (``max_retries``); Ray is imported only here, only when asked for.

``--max-seconds``: units not started when the budget expires are cancelled, a running unit is
stopped by its classifier's deadline; both come back as cut short.  A unit that fails with bad
input cancels the rest and fails the audit with its message (:class:`AuditorError`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.forkserver  # noqa: F401 - mp.forkserver below
import os
import signal
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from ..errors import AuditorError
from ..progress import Progress
from ..runtime.engine import return_freed_memory
from .units import AuditContext, Unit, run_unit

#: Ray retries a task whose worker process died this many times
MAX_RETRIES = 3
#: seconds a local pool waits, once the budget is spent, for running units to stop by themselves
#: before it terminates their worker processes (the budget's reserve for the report covers it)
GRACE_S = 0.5


def _progress(label: str, total: int) -> Progress:
    return Progress(label, total, eta=True)


def _raise_first_error(outcomes: list) -> None:
    for o in outcomes:
        if o is not None and o[0] == "error":
            raise AuditorError(o[1])


class SerialExecutor:
    """The units one after the other, in this process."""

    workers = 1

    def __init__(self, ctx: AuditContext):
        self.ctx = ctx

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def run(self, units: list[Unit], deadline=None, label: str = "audit units") -> list:
        out = []
        with _progress(label, len(units)) as bar:
            for u in units:
                o = run_unit(self.ctx, u, deadline)
                if o[0] == "error":
                    raise AuditorError(o[1])
                out.append(o)
                bar.update()
        return out


_WORKER_CTX: AuditContext | None = None


def _pool_init(ctx: AuditContext) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx
    if ctx.return_memory:
        return_freed_memory()  # as the driver process does


def _pool_run(unit: Unit, deadline):
    return run_unit(_WORKER_CTX, unit, deadline)


def _mp_context():
    """Workers forked from a fork server that imported the pipeline once (not one import per
    worker, and no threads or sessions inherited from the driver); spawned where there is none."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["auditor.pipeline.run"])
        return ctx
    return mp.get_context("spawn")


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except OSError:  # gone already
        pass


def _children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc; none where there is no /proc)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
            if len(fields) > 1 and fields[1] == str(pid):
                out.append(int(name))
    return out


class PoolExecutor:
    """The units on ``jobs`` local processes (no state inherited from the driver).

    The units are handed to the pool by a thread of their own: starting a worker waits for the
    fork server to import the pipeline (seconds), and the budget must not wait with it.  Once
    the budget is spent, running units get :data:`GRACE_S` seconds to stop on their own
    deadline; then the fork server (if still starting) and the worker processes still busy (a
    worker still starting up, a unit in an onnxruntime call that cannot be interrupted) are
    stopped, their units cut short, and the units of later phases run in this process (as
    :class:`SerialExecutor`)."""

    def __init__(self, ctx: AuditContext, jobs: int):
        self.ctx, self.workers = ctx, int(jobs)
        self.pool = None
        self._submitter = None

    def __enter__(self):
        self.pool = ProcessPoolExecutor(self.workers, mp_context=_mp_context(),
                                        initializer=_pool_init, initargs=(self.ctx,))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _stop_workers(self) -> None:
        """Stop what the pool started: the fork server and the workers it forked whose start
        still waits (they are not yet the pool's), then the pool's worker processes (SIGTERM,
        SIGKILL after a short wait); the pool is dropped without waiting for it."""
        if self._submitter is not None and self._submitter.is_alive():
            pid = getattr(getattr(mp.forkserver, "_forkserver", None), "_forkserver_pid", None)
            if pid:
                _signal(pid, signal.SIGSTOP)  # forks no more while its children are found
                for p in [*_children_of(pid), pid]:
                    _signal(p, signal.SIGKILL)  # a worker start blocked on either fails at once
            self._submitter.join(0.5)
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        for p in procs:
            if p.is_alive():
                p.terminate()
        end = time.monotonic() + 0.2
        for p in procs:
            p.join(max(end - time.monotonic(), 0.0))
            if p.is_alive():
                p.kill()
                p.join(0.1)
        if self._submitter is None or not self._submitter.is_alive():  # else it holds the pool's lock
            self.pool.shutdown(wait=True, cancel_futures=True)  # its workers are gone: returns at once
        self.pool = None

    def run(self, units: list[Unit], deadline=None, label: str = "audit units") -> list:
        if self.pool is None:  # the workers were stopped by the budget: this process runs the rest
            return SerialExecutor(self.ctx).run(units, deadline, label)
        futures: dict = {}
        submitted = threading.Event()

        def submit_all():
            try:
                for i, u in enumerate(units):
                    futures[self.pool.submit(_pool_run, u, deadline)] = i
            except Exception:  # noqa: BLE001 - the pool was stopped by the budget meanwhile
                pass
            finally:
                submitted.set()

        self._submitter = threading.Thread(target=submit_all, name="auditor-submit", daemon=True)
        self._submitter.start()
        out: list = [None] * len(units)
        left = set(range(len(units)))
        with _progress(label, len(units)) as bar:
            while left:
                pending = [f for f, i in list(futures.items()) if i in left]
                if submitted.is_set() and not pending:
                    break
                timeout = None if submitted.is_set() else 0.05
                if deadline is not None and deadline.at is not None:
                    rem = deadline.remaining()
                    budget = rem + 0.05 if rem > 0 else max(rem + GRACE_S, 0.0) + 0.01
                    timeout = budget if timeout is None else min(timeout, budget)
                done = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)[0] if pending else \
                    (submitted.wait(timeout), set())[1]
                for f in done:
                    o = ("cut", None) if f.cancelled() else f.result()
                    if o[0] == "error":
                        for g in pending:
                            g.cancel()
                        raise AuditorError(o[1])
                    out[futures[f]] = o
                    left.discard(futures[f])
                    bar.update()
                if deadline is not None and deadline.expired():
                    for f, i in list(futures.items()):
                        if i in left and f.cancel():  # not started: cut short without running
                            out[i] = ("cut", None)
                            left.discard(i)
                            bar.update()
                    if left and deadline.remaining() <= -GRACE_S:
                        self._stop_workers()
                        for i in left:
                            out[i] = ("cut", None)
                            bar.update()
                        left = set()
        if self.pool is not None:
            self._submitter.join()
        return out


def _host_port(address: str) -> tuple[str, int] | None:
    """host and port of a Ray address (``HOST:PORT`` or ``ray://HOST:PORT``), None for ``auto``."""
    a = address.strip()
    if a == "auto":
        return None
    if "://" in a:
        a = a.split("://", 1)[1]
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise AuditorError(f"a Ray address is HOST:PORT, ray://HOST:PORT or auto, got '{address}'", where="--ray")
    return host.strip("[]"), int(port)


def connect_ray(address: str | None, num_cpus: int | None = None):
    """Join the Ray cluster at ``address`` (None or "local": start one on this machine, with
    ``num_cpus`` CPUs); returns (ray module, whether this call started the connection).  A Ray
    already initialised in this process is used as it is."""
    local = address in (None, "", "local")
    hp = None if local else _host_port(address)
    if hp is not None:
        try:
            socket.create_connection(hp, timeout=5).close()
        except OSError as e:
            raise AuditorError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}", where="--ray") from None
    try:
        import ray
    except ImportError:
        raise AuditorError("--ray needs the ray package: pip install 'auditor[ray]'", where="--ray") from None
    if ray.is_initialized():
        return ray, False
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    opts = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                ignore_reinit_error=True)
    if local:
        # a local cluster's workers import this very auditor package
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=num_cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, **opts)
        return ray, True
    try:
        ray.init(address=address, **opts)
    except Exception as e:  # ConnectionError, ray's own errors: the cluster is not usable
        raise AuditorError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                           where="--ray") from None
    return ray, True


def _ray_task(ctx, unit, deadline):
    if ctx.return_memory:
        return_freed_memory()
    return run_unit(ctx, unit, deadline)


class RayExecutor:
    """The units as Ray tasks (one CPU each), on the cluster at ``address``."""

    def __init__(self, ctx: AuditContext, address: str | None = None, num_cpus: int | None = None):
        self.ctx, self.address, self.num_cpus = ctx, address, num_cpus
        self.ray, self.owned, self.ctx_ref, self.remote = None, False, None, None

    def __enter__(self):
        self.ray, self.owned = connect_ray(self.address, self.num_cpus)
        ray = self.ray
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self.ctx_ref = ray.put(self.ctx)
        self.remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_ray_task)
        return self

    def __exit__(self, *exc):
        self.ctx_ref = None
        if self.owned:
            self.ray.shutdown()

    def run(self, units: list[Unit], deadline=None, label: str = "audit units") -> list:
        ray = self.ray
        from ray.exceptions import RayTaskError, TaskCancelledError

        refs = [self.remote.remote(self.ctx_ref, u, deadline) for u in units]
        index = {r: i for i, r in enumerate(refs)}
        out: list = [None] * len(units)
        pending = list(refs)
        cancelled = False
        with _progress(label, len(units)) as bar:
            while pending:
                timeout = None
                if deadline is not None and deadline.at is not None and not cancelled:
                    timeout = max(deadline.remaining(), 0.0) + 0.05
                done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
                for r in done:
                    try:
                        o = ray.get(r)
                    except TaskCancelledError:
                        o = ("cut", None)
                    except RayTaskError as e:  # a bug in a unit: surface the original exception
                        for p in pending:
                            ray.cancel(p, force=True)
                        cause = getattr(e, "cause", None)
                        raise cause if isinstance(cause, Exception) else RuntimeError(str(e).splitlines()[0]) from None
                    if o[0] == "error":
                        for p in pending:
                            ray.cancel(p, force=True)
                        raise AuditorError(o[1])
                    out[index[r]] = o
                    bar.update()
                if deadline is not None and deadline.expired() and not cancelled:
                    # cancel the outstanding tasks; a running one may also stop on its own deadline
                    for p in pending:
                        ray.cancel(p, force=False)
                    cancelled = True
        return out


def make_executor(ctx: AuditContext, jobs: int = 1, ray_address: str | None = None):
    """The executor of an audit: Ray when ``ray_address`` is given ("local" starts a cluster on
    this machine with ``jobs`` CPUs when jobs > 1), else a process pool of ``jobs`` processes,
    else this process."""
    if ray_address is not None:
        return RayExecutor(ctx, ray_address, num_cpus=jobs if jobs > 1 else None)
    if jobs > 1:
        return PoolExecutor(ctx, jobs)
    return SerialExecutor(ctx)

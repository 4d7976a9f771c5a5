"""Executors (registry ``EXECUTORS``): where the runs of a sweep execute.

``inline`` (this process), ``process`` (a local pool of ``--max-parallel`` worker processes, CPU
threads split between them), ``ray`` (one Ray task per run with ``num_cpus``/``num_gpus`` requests,
on a local instance or ``--address``). Each hands back ``concurrent.futures.Future`` objects of
:class:`~mmbench.sweep.worker.Result`.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import Any

from mmbench.errors import MMBenchError
from mmbench.registry import EXECUTORS, unknown_name_message
from mmbench.results import RunFolder, atomic_write_bytes
from mmbench.runtime import cpu_count
from mmbench.sweep.grid import Run
from mmbench.sweep.worker import Result, Task, _worker_init, execute


class Executor:
    """Submits tasks and hands back ``concurrent.futures.Future`` objects of :class:`Result`."""

    #: how many runs may be in flight at once
    capacity: int = 1

    def submit(self, task: Task) -> Future:
        raise NotImplementedError

    def prepare(self, task: Task) -> Task:
        """Executor-specific fields of a task (threads, resources) before it is submitted."""
        return task

    def check_resources(self, runs: list[Run]) -> list[str]:
        """Warnings about runs this executor may never place; an :class:`MMBenchError` when it never can."""
        return []

    def finish(self, task: Task, result: Result) -> None:
        """Driver-side work after a run returns (e.g. writing its files when there is no shared filesystem)."""

    def close(self, cancel: bool = False) -> None:
        pass


@EXECUTORS.register("inline")
class InlineExecutor(Executor):
    """runs one after another in this process (debugging, tiny grids)"""

    def __init__(self, max_parallel: int | None = None, **_: Any):
        self.capacity = 1

    def submit(self, task: Task) -> Future:
        future: Future = Future()
        try:
            future.set_result(execute(task))
        except Exception as e:  # noqa: BLE001
            future.set_exception(e)
        return future


@EXECUTORS.register("process")
class ProcessExecutor(Executor):
    """a local pool of --max-parallel worker processes; CPU threads split between them"""

    def __init__(self, max_parallel: int | None = None, **_: Any):
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.capacity = max_parallel or cpu_count()
        self.threads = max(1, cpu_count() // self.capacity)
        self.pids = self.context.SimpleQueue()  # each worker puts its process id here when it starts
        self.pool = self._pool()

    def _pool(self):
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.capacity, mp_context=self.context, initializer=_worker_init,
                                   initargs=(self.threads, self.pids))

    def prepare(self, task: Task) -> Task:
        task.threads = self.threads
        return task

    def submit(self, task: Task) -> Future:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.pool.submit(execute, task)
        except BrokenProcessPool:  # a worker died and took the pool with it: start a new one
            self.close(cancel=True)
            self.pool = self._pool()
            return self.pool.submit(execute, task)

    def close(self, cancel: bool = False) -> None:
        if cancel:  # workers still running a task: the pool would wait for them
            started = set()
            while not self.pids.empty():
                started.add(self.pids.get())
            for p in self.context.active_children():
                if p.pid in started:
                    with contextlib.suppress(Exception):
                        p.kill()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """one Ray task per run (num_cpus/num_gpus requests) on a local instance or --address auto|ray://HOST:PORT"""

    def __init__(self, max_parallel: int | None = None, address: str | None = None, shared_fs: bool = True,
                 **_: Any):
        try:
            import ray
        except ImportError:
            raise MMBenchError("the ray executor needs Ray: pip install 'mmbench[ray]'") from None
        self.ray = ray
        self.shared_fs = shared_fs
        self.max_parallel = max_parallel
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = max_parallel or cpu_count()
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise MMBenchError(f"cannot connect to Ray at {address or 'a new local instance'} ({e}); "
                                   "start a cluster with `ray start --head` or drop --address") from None
            self.started = True
        cpus = ray.cluster_resources().get("CPU", 1.0)
        self.capacity = max_parallel or max(1, int(cpus))
        self._remote = ray.remote(execute)
        self._refs: dict[str, Any] = {}  # run id -> ObjectRef in flight

    def check_resources(self, runs: list[Run]) -> list[str]:
        """A request that no alive node meets waits forever on a fixed cluster: an error on the instance this
        executor started, a warning on a cluster it joined (whose autoscaler may add such a node)."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in ("CPU", "GPU")}
        unmet = [r for r in runs if r.num_cpus > largest["CPU"] or r.num_gpus > largest["GPU"]]
        if not unmet:
            return []
        r = unmet[0]
        message = (f"{len(unmet)} run(s) ask for more than any Ray node has (e.g. {r.label}: num_cpus={r.num_cpus:g}, "
                   f"num_gpus={r.num_gpus:g}; the largest node has {largest['CPU']:g} CPUs, {largest['GPU']:g} GPUs)")
        if self.started:
            hint = " or raise --max-parallel (the local instance's CPU count)" if self.max_parallel else ""
            raise MMBenchError(f"{message}; lower `resources` in the grid{hint}")
        return [f"{message}; they wait until the cluster adds such a node"]

    def prepare(self, task: Task) -> Task:
        task.threads = max(1, int(task.run.num_cpus))
        task.shared_fs = self.shared_fs
        if not self.shared_fs:
            ckpt = task.run.folder().path / "checkpoint.pt"
            task.checkpoint = ckpt.read_bytes() if task.resume and ckpt.exists() else None
        return task

    def submit(self, task: Task) -> Future:
        ref = self._remote.options(num_cpus=task.run.num_cpus, num_gpus=task.run.num_gpus, max_retries=0,
                                   name=f"mmbench:{task.run.run_id}").remote(task)
        self._refs[task.run.run_id] = ref
        return ref.future()

    def finish(self, task: Task, result: Result) -> None:
        self._refs.pop(task.run.run_id, None)
        if result.files is not None:
            write_returned_files(task.run.folder(), result.files)
            result.files = None

    def close(self, cancel: bool = False) -> None:
        if cancel:  # on a shared cluster the tasks would otherwise go on after the sweep stopped
            for ref in self._refs.values():
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self.started:
            self.ray.shutdown()


def write_returned_files(folder: RunFolder, files: dict[str, bytes]) -> None:
    """Write a run's files returned by a remote worker: atomically, ``summary.json`` last."""
    with folder.lock(timeout=30):
        if "summary.json" in files:
            folder.drop_progress()
        for name in sorted(files, key=lambda n: n == "summary.json"):
            atomic_write_bytes(folder.path / name, files[name])


def make_executor(name: str, max_parallel: int | None = None, address: str | None = None,
                  shared_fs: bool = True) -> Executor:
    check_options(name, max_parallel, address, shared_fs)
    return EXECUTORS.get(name)(max_parallel=max_parallel, address=address, shared_fs=shared_fs)


def check_options(executor: str, max_parallel: int | None = None, address: str | None = None,
                  shared_fs: bool = True, retries: int = 0) -> None:
    """Options that contradict each other, each with one clear message."""
    if executor not in EXECUTORS:
        raise MMBenchError(unknown_name_message("executor", executor, EXECUTORS.names()))
    if max_parallel is not None and max_parallel < 1:
        raise MMBenchError(f"--max-parallel must be at least 1, got {max_parallel}")
    if executor == "inline" and max_parallel not in (None, 1):
        raise MMBenchError("--executor inline runs one run at a time; use --executor process for --max-parallel")
    if address is not None and executor != "ray":
        raise MMBenchError(f"--address is for --executor ray, not {executor}")
    if not shared_fs and executor != "ray":
        raise MMBenchError(f"--no-shared-fs is for --executor ray; {executor} always writes the results directory")
    if retries < 0:
        raise MMBenchError(f"--retries must be 0 or more, got {retries}")

"""Hot reload: new, changed and removed versions are loaded and unloaded while serving.

A pass (`RepositoryWatcher.reload`) walks the repository with the one walker
(`repository.layout.find_versions`) and compares each version directory's fingerprint (name,
size and modification time of every file in it) with the one it was loaded from:

- a new version is loaded (`service.loader.load_version`, every check of start-up included)
  and becomes visible at once; a refusal is logged and listed, nothing else changes, and the
  files refused are not loaded again until they change, unless `retry` says the cause has gone
  (with the Triton backend: Triton was unreachable or not ready, and now is, see
  service/triton_health.py);
- a changed version is loaded again beside the one serving; only when the new copy loads does it
  replace the old one, so a corrupted file appearing under a served version leaves the copy in
  memory serving (the refusal is logged and listed);
- a removed version stops being visible at once; it is closed when the calls that hold it end.

A directory whose fingerprint changes while it is being loaded is still being written: that
load is dropped and the next pass tries again. Callers that pin no version get the latest
loaded version when their call starts and keep it until the call ends, so a reload never fails
them. Passes run one at a time: on a timer (`reload_interval_s`), on SIGHUP, and on the
ModelControl RPC, which can also unload a model or version until it is loaded explicitly again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from latentwatch.errors import InvalidInput, ModelNotFound, VersionRefused, quote
from latentwatch.repository.layout import find_versions
from latentwatch.service.loader import load_version
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.repository import ModelRepository, ModelVersion, Refusal
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (model, version)


def fingerprint(version_dir: Path) -> str:
    """A digest of every entry's name, type, size and mtime in a version directory (no
    contents read: a pass over a large repository stays cheap)."""
    digest = hashlib.sha256()
    try:
        entries = sorted(os.scandir(version_dir), key=lambda e: e.name)
    except OSError as err:
        return f"unreadable: {err}"
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # removed between listing and stat: the next pass sees the new state
        digest.update(f"{entry.name}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class ReloadReport:
    """What one pass or model-control call changed."""

    loaded: list[Key] = field(default_factory=list)
    reloaded: list[Key] = field(default_factory=list)
    unloaded: list[Key] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.reloaded or self.unloaded)

    def summary(self) -> str:
        parts = [
            f"{what} {', '.join(f'{n}:{v}' for n, v in keys)}"
            for what, keys in (
                ("loaded", self.loaded), ("reloaded", self.reloaded), ("unloaded", self.unloaded)
            )
            if keys
        ]
        parts += [f"refused {r.name}:{r.version} ({r.reason})" for r in self.refused]
        return "; ".join(parts) or "no change"


class RepositoryWatcher:
    """Keeps a served ModelRepository in step with its directory; one pass at a time."""

    def __init__(
        self,
        settings: Settings,
        repository: ModelRepository,
        metrics: ServiceMetrics,
        executor: Executor | None,
        on_change: Callable[[ModelRepository], Awaitable[None]] | None = None,
        retry: Callable[[Refusal, Path], Awaitable[bool]] | None = None,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._metrics = metrics
        self._executor = executor
        self._on_change = on_change
        self._retry = retry  # whether a refusal of unchanged files is worth loading again
        self._lock = asyncio.Lock()
        self._fingerprints: dict[Key, str] = {}  # of the files each served version came from
        self._refused_at: dict[Key, str] = {}  # fingerprint a refusal was for: not retried
        self._held_out: set[Key] = set()  # unloaded by ModelControl: polling leaves them out
        self._held_out_models: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # closes and SIGHUP passes

    async def adopt(self) -> None:
        """Records the fingerprints of what start-up loaded (and refused)."""
        found = await self._scan()
        for name, version, print_ in found:
            key = (name, version)
            if self._served(key) is not None:
                self._fingerprints[key] = print_
            elif any(r.name == name and r.version == version for r in self._repository.refused):
                self._refused_at[key] = print_

    def start(self) -> None:
        """Polls every `reload_interval_s` (nothing when it is 0)."""
        if self._settings.reload_interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._poll(), name="latentwatch-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._retiring:  # versions being closed get the shutdown grace to finish
            await asyncio.wait(set(self._retiring), timeout=self._settings.shutdown_grace_s)
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def reload_soon(self) -> asyncio.Task[None]:
        """Schedules one pass (SIGHUP, Triton ready again); its failure is logged, never raised."""
        task = asyncio.get_running_loop().create_task(self._logged_reload())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    async def _logged_reload(self) -> None:
        try:
            await self.reload()
        except Exception:  # a failed pass is logged; serving and the next pass go on
            log.exception("repository reload failed")

    async def reload(self, model: str | None = None) -> ReloadReport:
        """One pass over the repository (or one model): loads, reloads and unloads."""
        async with self._lock:
            report = await self._pass(model, explicit=set())
        await self._changed(report)
        return report

    async def load(self, model: str, version: str = "") -> ReloadReport:
        """Loads a model (every version on disk) or one version now, even if it was unloaded
        explicitly before, and lets polling keep it in step again."""
        _check_name(model, "model_name")
        async with self._lock:
            self._held_out_models.discard(model)
            keys = {k for k in self._held_out if k[0] == model and (not version or k[1] == version)}
            self._held_out -= keys
            on_disk = {(n, v) for n, v, _ in await self._scan() if n == model}
            wanted = {k for k in on_disk if not version or k[1] == version}
            if not wanted:
                raise ModelNotFound(
                    f"no version directory for model {quote(model)}"
                    + (f" version {quote(version)}" if version else "")
                    + f" in {self._repository.path}"
                )
            for key in wanted:  # load again even when a refusal was recorded for these files
                self._refused_at.pop(key, None)
            report = await self._pass(model, explicit=wanted)
        await self._changed(report)
        return report

    async def unload(self, model: str, version: str = "") -> ReloadReport:
        """Unloads a model or one version; it stays unloaded until `load` (polling skips it)."""
        _check_name(model, "model_name")
        async with self._lock:
            served = self._repository.versions.get(model, {})
            keys = [(model, v) for v in served if not version or v == version]
            if not keys:
                raise ModelNotFound(
                    f"model {quote(model)}"
                    + (f" version {quote(version)}" if version else "")
                    + " is not loaded"
                )
            if version:
                self._held_out.add((model, version))
            else:
                self._held_out_models.add(model)
            report = ReloadReport()
            for key in keys:
                self._remove(key)
                report.unloaded.append(key)
        await self._changed(report)
        return report

    # -- one pass -------------------------------------------------------------------------

    async def _pass(self, model: str | None, explicit: set[Key]) -> ReloadReport:
        report = ReloadReport()
        found = {
            (n, v): p for n, v, p in await self._scan() if model is None or n == model
        }
        for key in [k for k in self._all_served() if model is None or k[0] == model]:
            if key not in found:
                self._remove(key)
                report.unloaded.append(key)
        for key, print_ in found.items():
            if self._is_held_out(key) and key not in explicit:
                continue
            if self._fingerprints.get(key) == print_ and self._served(key) is not None:
                continue
            if self._refused_at.get(key) == print_ and not await self._worth_retrying(key):
                continue  # refused for exactly these files; a change or an explicit load retries
            await self._load(key, print_, report)
        return report

    async def _worth_retrying(self, key: Key) -> bool:
        """Whether `retry` finds the cause of this version's refusal gone."""
        refusal = next((r for r in self._repository.refused if (r.name, r.version) == key), None)
        if self._retry is None or refusal is None:
            return False
        try:
            return await self._retry(refusal, self._repository.path / key[0] / key[1])
        except Exception:  # no retry this pass; the next one asks again
            log.warning("checking whether to load model %s version %s again failed",
                        quote(key[0]), quote(key[1]), exc_info=True)
            return False

    async def _load(self, key: Key, print_: str, report: ReloadReport) -> None:
        name, version = key
        version_dir = self._repository.path / name / version
        try:
            loaded = await load_version(
                name, version, version_dir, self._settings, self._metrics, self._executor
            )
        except VersionRefused as err:
            self._refuse(key, print_, str(err), report)
            return
        except Exception as err:  # a refusal of this version; the server keeps serving
            log.error("loading model %s version %s failed", quote(name), quote(version),
                      exc_info=True)
            self._refuse(key, print_, f"unexpected error while loading: {err}", report)
            return
        after = await self._fingerprint(version_dir)
        if after != print_:
            log.info("model %s version %s changed while loading; trying again next pass",
                     quote(name), quote(version))
            await _close_version(loaded)
            self._keep_metrics(key)
            return
        old = self._served(key)
        self._insert(loaded)
        self._fingerprints[key] = print_
        self._refused_at.pop(key, None)
        self._repository.refused[:] = [
            r for r in self._repository.refused if (r.name, r.version) != key
        ]
        if old is None:
            report.loaded.append(key)
        else:
            self._retire(old)
            report.reloaded.append(key)

    def _keep_metrics(self, key: Key) -> None:
        """Loading a copy registered fresh series; the copy still serving keeps its own."""
        mv = self._served(key)
        if mv is None:
            self._metrics.remove_version(*key)
        else:
            self._metrics.add_version(mv.name, mv.version, mv.provider, mv.metrics)

    def _refuse(self, key: Key, print_: str, reason: str, report: ReloadReport) -> None:
        name, version = key
        refusal = Refusal(name, version, reason)
        self._refused_at[key] = print_
        report.refused.append(refusal)
        self._repository.refused[:] = [
            r for r in self._repository.refused if (r.name, r.version) != key
        ] + [refusal]
        if self._served(key) is None:
            self._metrics.set_refused(name, version)
            log.error("refusing model %s version %s: %s", quote(name), quote(version), reason)
        else:
            log.error(
                "model %s version %s changed on disk and the new files are refused (%s); the "
                "copy loaded before keeps serving", quote(name), quote(version), reason,
            )

    # -- the served set -------------------------------------------------------------------

    def _served(self, key: Key) -> ModelVersion | None:
        return self._repository.versions.get(key[0], {}).get(key[1])

    def _all_served(self) -> list[Key]:
        return [(n, v) for n, versions in self._repository.versions.items() for v in versions]

    def _is_held_out(self, key: Key) -> bool:
        return key in self._held_out or key[0] in self._held_out_models

    def _insert(self, mv: ModelVersion) -> None:
        # A fresh dict, assigned in one step: a call on the loop sees the old or the new set.
        versions = dict(self._repository.versions.get(mv.name, {}))
        versions[mv.version] = mv
        ordered = dict(sorted(versions.items(), key=lambda item: int(item[0])))
        self._repository.versions = {**self._repository.versions, mv.name: ordered}

    def _remove(self, key: Key) -> None:
        name, version = key
        versions = dict(self._repository.versions.get(name, {}))
        mv = versions.pop(version, None)
        table = dict(self._repository.versions)
        if versions:
            table[name] = versions
        else:
            table.pop(name, None)
        self._repository.versions = table
        self._fingerprints.pop(key, None)
        if mv is not None:
            self._metrics.remove_version(name, version)
            self._retire(mv)

    def _retire(self, mv: ModelVersion) -> None:
        """Closes a version no longer visible once the calls holding it have ended."""
        task = asyncio.create_task(self._close_when_idle(mv))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_when_idle(self, mv: ModelVersion) -> None:
        try:
            await asyncio.wait_for(mv.idle(), timeout=self._settings.shutdown_grace_s)
        except TimeoutError:
            log.warning(
                "model %s version %s: calls still running after %.1f s; closing it anyway",
                quote(mv.name), quote(mv.version), self._settings.shutdown_grace_s,
            )
        await _close_version(mv)

    async def _changed(self, report: ReloadReport) -> None:
        if report.changed or report.refused:
            log.info("repository reload: %s", report.summary())
        if report.changed and self._on_change is not None:
            await self._on_change(self._repository)

    # -- files ----------------------------------------------------------------------------

    async def _scan(self) -> list[tuple[str, str, str]]:
        """(model, version, fingerprint) of every version directory, off the event loop."""
        repo = self._repository.path

        def scan() -> list[tuple[str, str, str]]:
            if not repo.is_dir():
                return []
            return [(n, v, fingerprint(p)) for n, v, p in find_versions(repo)]

        return await asyncio.get_running_loop().run_in_executor(self._executor, scan)

    async def _fingerprint(self, version_dir: Path) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fingerprint, version_dir)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reload_interval_s)
            await self._logged_reload()


async def _close_version(mv: ModelVersion) -> None:
    try:
        await mv.close()
    except Exception:
        log.warning("closing model %s version %s failed", quote(mv.name), quote(mv.version),
                    exc_info=True)


def _check_name(value: str, what: str) -> None:
    if not value:
        raise InvalidInput(f"{what} is empty: name the model to load or unload")

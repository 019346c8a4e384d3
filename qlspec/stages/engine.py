"""The stage engine: keys, records, reasons, atomic outputs.

    data -> train -> quantise -> export -> convert -> build -> verify -> deploy

A stage's key is the digest of (the result-changing fields of the spec it reads, the keys of the
stages it consumes, the digest of its own source code: the import closure of its implementation and
the C++ sources it generates from). Same key, same outputs: a stage whose recorded key
equals its current key, and whose recorded outputs are all still there, is up to date. Keys chain
through upstream keys rather than output contents, so `plan` knows every key before anything runs.

Outputs go to ``build/<name>/.partial/<stage>-<key>/`` while the stage runs, and are renamed to
``build/<name>/<stage>/`` only when complete, with the record ``stage.json`` beside them. An
interrupted stage never looks done; a resumable stage (training) finds its checkpoints in the same
partial folder when it is run again with the same key. The record is versioned (``schema``).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import importlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from qlspec import __version__, atomic
from qlspec.errors import StageError
from qlspec.resources import shipped
from qlspec.spec.effects import keyed
from qlspec.spec.models import AppSpec
from qlspec.stages.closure import import_closures

RECORD = "stage.json"
RECORD_SCHEMA = 1
PACKAGE_DIR = Path(__file__).resolve().parents[1]

State = Literal["up to date", "will run", "not available yet", "skipped"]


@dataclass(frozen=True)
class StageContext:
    """What a running stage sees: the spec, its partial output folder, its inputs' output folders."""

    spec: AppSpec
    spec_path: Path
    out: Path
    inputs: Mapping[str, Path]
    build_dir: Path
    progress: bool = True
    log: Callable[[str], None] = print
    options: Mapping[str, Any] = field(default_factory=dict)  # command-line choices that are not spec fields


@dataclass(frozen=True)
class StageDef:
    """One stage of the pipeline.

    reads: dotted spec paths (prefixes) it reads; those whose effect is a result (`qlspec.spec.effects`)
        are part of the key.
    after: upstream stages whose outputs this stage consumes.
    run: "module:function" of the implementation, imported only when the stage runs (so plan stays
        fast); None while a later release has not built it ("not available yet"). The import closure of
        its module (`qlspec.stages.closure`) is the Python part of the key.
    assets: shipped folders of non-Python sources it reads (``backends/armcl``), part of the key.
    resumable: keep the partial folder of an interrupted run with the same key (checkpoints).
    files: dotted spec paths naming files whose contents (not just names) are part of the key.
    """

    name: str
    summary: str
    reads: tuple[str, ...]
    after: tuple[str, ...]
    run: str | Callable[[StageContext], None] | None = None
    resumable: bool = False
    files: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    enabled: Callable[[AppSpec], str | None] = lambda spec: None  # a reason to skip, or None
    rungs: tuple[str, ...] = ()  # the report rows it writes (what a change to it may move)


@dataclass(frozen=True)
class StageStatus:
    """Where one stage stands, and why: what `plan` prints and `apply` acts on."""

    stage: StageDef
    state: State
    key: str | None
    reasons: tuple[str, ...] = ()
    basis: Mapping[str, Any] | None = None  # what the key digests; the record stores exactly this


@dataclass
class Pipeline:
    """The stage graph for one resolved spec and one build folder."""

    stages: tuple[StageDef, ...]
    spec: AppSpec
    spec_path: Path
    build_root: Path
    resolved: dict[str, Any] = field(init=False)
    _code_digests: dict[str, str] = field(init=False, default_factory=dict, repr=False)  # of the current plan

    def __post_init__(self) -> None:
        self.resolved = flatten(self.spec.model_dump(mode="json", by_alias=True, exclude={"extends"}))
        names = [s.name for s in self.stages]
        for s in self.stages:
            for up in s.after:
                if up not in names[: names.index(s.name)]:
                    raise ValueError(f"stage {s.name} consumes {up}, which does not come before it")

    @property
    def build_dir(self) -> Path:
        return self.build_root / self.spec.name

    def stage(self, name: str) -> StageDef:
        for s in self.stages:
            if s.name == name:
                return s
        raise StageError(f"unknown stage '{name}' (stages: {', '.join(s.name for s in self.stages)})")

    # ---------------------------------------------------------------------------------------------
    # planning

    def spec_slice(self, stage: StageDef) -> dict[str, Any]:
        """The flattened spec fields a stage reads that change a result: no speed, naming or access
        field, no secret (`qlspec.spec.effects`)."""
        return {k: v for k, v in sorted(self.resolved.items()) if any(_under(k, r) for r in stage.reads) and keyed(k)}

    def code_digest(self, stage: StageDef) -> str:
        if stage.name not in self._code_digests:  # once per plan: the stages share most of their files
            self._code_digests = code_digests(self.stages)
        return self._code_digests[stage.name]

    def plan(self, *, force: Iterable[str] = (), until: str | None = None, only: str | None = None) -> list[StageStatus]:
        """Each stage's state and the reasons for it, in pipeline order.

        until: stages after this one are skipped. only: stages that this one does not need
        (it and what it consumes, transitively) are skipped.
        """
        self._code_digests = {}  # a plan sees the sources as they are now
        force = set(force)
        for name in force | {n for n in (until, only) if n}:
            self.stage(name)
        needed = self.upstream_of(only) if only else None
        statuses: list[StageStatus] = []
        keys: dict[str, str] = {}
        will_run: set[str] = set()
        skipped: set[str] = set()
        unavailable: str | None = None
        past_until = False
        for stage in self.stages:
            if unavailable is not None:
                statuses.append(StageStatus(stage, "not available yet", None, (f"comes after {unavailable}",)))
                continue
            if stage.run is None:
                unavailable = stage.name
                statuses.append(StageStatus(stage, "not available yet", None, ("built by a later release",)))
                continue
            basis = self._basis(stage, keys)
            key = digest_json(basis)
            keys[stage.name] = key
            if past_until:
                statuses.append(StageStatus(stage, "skipped", key, (f"after --until {until}",), basis))
                continue
            if needed is not None and stage.name not in needed:
                statuses.append(StageStatus(stage, "skipped", key, (f"not needed for {only}",), basis))
                continue
            skip = stage.enabled(self.spec) or next((f"upstream {up} skipped" for up in stage.after if up in skipped), None)
            if skip:
                skipped.add(stage.name)
                statuses.append(StageStatus(stage, "skipped", key, (skip,), basis))
            else:
                reasons = self._stale_reasons(stage, key, basis, will_run, forced=stage.name in force)
                if reasons:
                    will_run.add(stage.name)
                statuses.append(StageStatus(stage, "will run" if reasons else "up to date", key, tuple(reasons), basis))
            if until == stage.name:
                past_until = True
        return statuses

    def upstream_of(self, name: str) -> set[str]:
        """`name` and every stage it consumes, transitively."""
        out, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current not in out:
                out.add(current)
                todo += list(self.stage(current).after)
        return out

    def _basis(self, stage: StageDef, keys: Mapping[str, str]) -> dict[str, Any]:
        """Everything a stage's key is the digest of."""
        return {
            "stage": stage.name,
            "code": self.code_digest(stage),
            "spec": self.spec_slice(stage),
            "inputs": {up: keys[up] for up in stage.after},
            "files": self.file_digests(stage),
        }

    def file_digests(self, stage: StageDef) -> dict[str, str | None]:
        """Digest of each file or folder the stage's spec fields name (None where absent or null).

        A file: sha256 of its bytes. A folder (a data set of many GB): sha256 of its listing, every
        file's relative path, size and modification time, so adding, removing or rewriting a file counts.
        """
        out: dict[str, str | None] = {}
        for path in stage.files:
            value = self.resolved.get(path)
            if value is None:
                out[path] = None
            elif Path(value).is_dir():
                listing = [
                    (str(f.relative_to(value)), f.stat().st_size, f.stat().st_mtime_ns)
                    for f in sorted(Path(value).rglob("*"))
                    if f.is_file()
                ]
                out[path] = digest_json(listing)
            else:
                out[path] = digest_file(Path(value))
        return out

    def _stale_reasons(self, stage: StageDef, key: str, basis: Mapping[str, Any], will_run: set[str], *, forced: bool) -> list[str]:
        reasons = [f"forced (--force {stage.name})"] if forced else []
        record = self.read_record(stage.name)
        if record is None:
            return reasons + ["never run"]
        if record.get("key") == key:
            missing = self._missing_outputs(stage.name, record)
            if missing:
                reasons.append(f"outputs missing or modified: {', '.join(missing[:3])}")
            # an upstream that reruns with the same key may still produce other bytes (training)
            return reasons + [f"upstream {up} will run" for up in stage.after if up in will_run]
        reasons += diff_slices(record.get("spec", {}), basis["spec"])
        if record.get("code") != basis["code"]:
            reasons.append("code changed")
        recorded_files = record.get("files", {})
        for path, digest in basis["files"].items():
            if recorded_files.get(path) != digest:
                reasons.append(f"file named by {path} changed")
        for up in stage.after:
            if up in will_run:
                reasons.append(f"upstream {up} will run")
            elif record.get("inputs", {}).get(up) != self._recorded_key(up):
                reasons.append(f"upstream {up} changed")
        return reasons or ["key changed"]

    def _recorded_key(self, name: str) -> str | None:
        record = self.read_record(name)
        return record.get("key") if record else None

    def read_record(self, name: str) -> dict[str, Any] | None:
        path = self.build_dir / name / RECORD
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if record.get("schema") == RECORD_SCHEMA else None

    def _missing_outputs(self, name: str, record: Mapping[str, Any]) -> list[str]:
        """Recorded outputs that are gone, changed size, or were written after the record and no longer
        match its sha256 (a same-size edit is caught; untouched files are not re-read)."""
        folder = self.build_dir / name
        try:
            recorded_at = (folder / RECORD).stat().st_mtime_ns
        except OSError:
            return list(record.get("outputs", {}))
        bad = []
        for rel, meta in record.get("outputs", {}).items():
            f = folder / rel
            try:
                st = f.stat()
                ok = f.is_file() and st.st_size == meta["size"] and (st.st_mtime_ns <= recorded_at or digest_file(f) == meta.get("sha256"))
            except OSError:
                ok = False
            if not ok:
                bad.append(rel)
        return bad

    # ---------------------------------------------------------------------------------------------
    # running

    def run_stage(self, status: StageStatus, *, progress: bool, log: Callable[[str], None], options: Mapping[str, Any] = {}) -> None:
        """Run one stage into its partial folder, record it, then move it into place. `options` are
        command-line choices the stage may read (``trust_new_host_key``); they are not part of the key."""
        stage, key, basis = status.stage, status.key, status.basis
        assert stage.run is not None and key is not None and basis is not None
        partial = self.build_dir / ".partial" / f"{stage.name}-{key[:16]}"
        if partial.exists() and not stage.resumable:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        inputs = {up: self.build_dir / up for up in stage.after}
        for up, path in inputs.items():
            if self.read_record(up) is None:
                raise StageError(f"input stage '{up}' has not been built", where=str(path))
        started = time.time()
        try:
            _implementation(stage)(StageContext(self.spec, self.spec_path, partial, inputs, self.build_dir, progress, log, options))
        finally:
            release_memory()
        (partial / RECORD).unlink(missing_ok=True)
        record = {
            "schema": RECORD_SCHEMA,
            "stage": stage.name,
            "key": key,
            "code": basis["code"],  # as planned: the code that ran, even if files change meanwhile
            "spec": basis["spec"],
            "files": basis["files"],
            "inputs": basis["inputs"],
            "outputs": digest_outputs(partial),
            "seconds": round(time.time() - started, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "qlspec": __version__,
        }
        atomic.write_json(partial / RECORD, record)
        final = self.build_dir / stage.name
        trash = self.build_dir / ".partial" / f"trash-{stage.name}-{uuid.uuid4().hex[:8]}"
        if final.exists():
            final.rename(trash)
        partial.rename(final)
        shutil.rmtree(trash, ignore_errors=True)


def _implementation(stage: StageDef) -> Callable[[StageContext], None]:
    if callable(stage.run):
        return stage.run
    module, _, function = str(stage.run).partition(":")
    return getattr(importlib.import_module(module), function)


# --------------------------------------------------------------------------------------------------
# digests, slices, atomic writes


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {'a.b.c': value}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def diff_slices(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Field-level changes as reasons: 'training.epochs modified: 8 -> 10'."""
    out = []
    for k in sorted(set(old) | set(new)):
        if k not in old:
            out.append(f"{k} new: {_show(new[k])}")
        elif k not in new:
            out.append(f"{k} deleted (was {_show(old[k])})")
        elif old[k] != new[k]:
            out.append(f"{k} modified: {_show(old[k])} -> {_show(new[k])}")
    return out


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, list, dict)) or value is None else str(value)


def digest_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


SOURCE_SUFFIXES = (".py", ".h", ".cpp", ".cmake", ".in")


def code_digests(stages: Iterable[StageDef]) -> dict[str, str]:
    """Digest of what each stage is made of: the import closure of its implementation module and the
    C++/CMake sources of its shipped `assets`. Files are named as in the repository
    (``qlspec/stages/train.py``, ``backends/armcl/runtime/qlspec_io.h``), so an editable checkout and
    an installed wheel give the same key."""
    stages = tuple(stages)
    modules = {s.name: s.run.partition(":")[0] if isinstance(s.run, str) else getattr(s.run, "__module__", "") for s in stages}
    closures = import_closures(set(modules.values()), PACKAGE_DIR)
    out = {}
    for stage in stages:
        named = [(f"qlspec/{p.relative_to(PACKAGE_DIR)}", p) for p in closures[modules[stage.name]]]
        for asset in stage.assets:
            folder, _, sub = asset.partition("/")
            root = shipped(folder) / sub
            if not root.is_dir():
                raise StageError(f"stage {stage.name}: shipped folder {asset} is missing (a broken installation)", where=str(root))
            named += [(f"{asset}/{f.relative_to(root)}", f) for f in root.rglob("*") if f.suffix in SOURCE_SUFFIXES and f.is_file()]
        h = hashlib.sha256()
        for name, f in sorted(named):
            stat = f.stat()
            h.update(name.encode() + b"\0" + _source_digest(f, stat.st_mtime_ns, stat.st_size) + b"\0")
        out[stage.name] = h.hexdigest()
    return out


def code_digest(stage: StageDef) -> str:
    return code_digests((stage,))[stage.name]


@lru_cache(maxsize=8192)
def _source_digest(path: Path, mtime_ns: int, size: int) -> bytes:
    """sha256 of a source file, read once per version of it (plan computes every key several times)."""
    return hashlib.sha256(path.read_bytes()).digest()


def digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def digest_outputs(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        str(f.relative_to(folder)): {"size": f.stat().st_size, "sha256": digest_file(f)}
        for f in sorted(p for p in folder.rglob("*") if p.is_file())
    }


def release_memory() -> None:
    """Hand the memory a finished stage freed back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere), so the next stage of the same process starts from what is still in use rather than
    from the earlier stage's high-water mark (measured: the default app's quantise stage peaked 0.5 GB
    higher after data and train had run in the same process)."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)

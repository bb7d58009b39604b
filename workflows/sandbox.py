"""The workflow sandbox every outdial worker and replayer uses: what passes through it, and code
compiled once per process rather than once per workflow run or per activation."""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import Any, ClassVar

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, WithSerializationContext
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# Validators in our models call phonenumbers (which lazily imports region data), pytz and
# email_validator while payloads are decoded inside the sandbox: pass them through, or a fresh worker
# fails the workflow task for any region it has not loaded yet. This module holds the process's
# compiled code, so it is the same module inside and out.
PASSTHROUGH_MODULES = ("phonenumbers", "pytz", "email_validator", __name__)
SANDBOXED_PACKAGE = "workflows"  # the sandbox imports its modules again for every workflow run


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with the workflow modules it re-imports and its own code strings compiled once
    per process."""
    if not any(isinstance(finder, CompiledOnceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, CompiledOnceFinder(SANDBOXED_PACKAGE))
    _compile_snippets_once()
    _skip_serialization_contexts_nothing_reads()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def _compile_snippets_once() -> None:
    """The SDK's sandbox runs each activation, and each payload's serialization context, as `exec` of
    one of a few constant code strings, which Python compiles every time: after our own costs were cut,
    that was 14% of a worker's Python per call order. Its runner module gets an `exec` (a module global
    shadows the builtin) that compiles each string once. Same code, same semantics; should the SDK
    move that code, this assignment is inert (a test says so)."""
    try:
        from temporalio.worker.workflow_sandbox import _runner
    except ImportError:
        return
    _runner.exec = exec_compiled_once  # type: ignore[attr-defined]


def _skip_serialization_contexts_nothing_reads() -> None:
    """Around every activation the SDK passes each payload through its codec and external storage
    (six passes), and for each it first asks the sandbox for the payload's serialization context: one
    `exec` in the sandbox, its imports patched, per payload and pass. Only a codec or a storage that
    takes contexts (`WithSerializationContext`) would use it, and outdial's (none, or the encryption
    codec) take none: those passes then use the workflow's converter as it is, which is what the
    context would have given. A worker's CPU per order: a tenth less, a sixth with the encryption codec
    (README, Performance). A codec that takes contexts still gets them. Should the SDK move that code,
    this is inert (a test says so)."""
    try:
        from temporalio.worker._workflow import _CommandAwareDataConverter as Converter
    except ImportError:
        return
    current = Converter.__dict__.get("_get_current_dc")
    store = Converter.__dict__.get("_external_store_payload_sequence")
    if current is None or store is None or getattr(current, "skips_contexts", False):
        return

    def context_blind(converter: Any) -> bool:
        plain = converter._ca_context_free_dc
        return plain.external_storage is None and not isinstance(
            plain.payload_codec, WithSerializationContext
        )

    def get_current_dc(self: Any) -> DataConverter:
        return self._ca_workflow_context_dc if context_blind(self) else current(self)

    async def external_store_payload_sequence(self: Any, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads) if context_blind(self) else await store(self, payloads)

    get_current_dc.skips_contexts = True  # type: ignore[attr-defined]
    Converter._get_current_dc = get_current_dc  # type: ignore[method-assign]
    Converter._external_store_payload_sequence = external_store_payload_sequence  # type: ignore[method-assign]


@functools.lru_cache(maxsize=64)
def compiled_snippet(source: str) -> CodeType:
    # what exec(source) compiles: the calling module's future flags are annotations, as here
    return compile(source, "<string>", "exec")


def exec_compiled_once(source: str | CodeType, globals: Any = None, locals: Any = None, /) -> None:
    exec(compiled_snippet(source) if isinstance(source, str) else source, globals, locals)


class CompiledOnceLoader(importlib.machinery.SourceFileLoader):
    """A source file's loader that keeps its code object: the next import runs it again, uncompiled."""

    codes: ClassVar[dict[str, CodeType]] = {}  # by file path

    def get_code(self, fullname: str) -> CodeType:
        code = self.codes.get(self.path)
        if code is None:
            code = self.codes[self.path] = super().get_code(fullname)
        return code


class CompiledOnceFinder(importlib.abc.MetaPathFinder):
    """Finds a package's modules as the other finders do, loaded by a `CompiledOnceLoader`.

    The sandbox imports a workflow's module afresh for every workflow it runs (each new run, each
    replay after a cache eviction). Python reads the code from __pycache__ when it can, but with
    PYTHONDONTWRITEBYTECODE (usual in containers), a read-only install or a stale .pyc it compiles the
    source every time (8-13 ms for call_order.py on 2 cores). The code is the same each time, so it
    is kept; and every run in this process then runs the same code, whatever happens to the file
    meanwhile."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.package and not fullname.startswith(f"{self.package}."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            if type(spec.loader) is importlib.machinery.SourceFileLoader:
                spec.loader = CompiledOnceLoader(spec.loader.name, spec.loader.path)
            return spec
        return None

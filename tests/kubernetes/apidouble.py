"""A test double of the Kubernetes API server: stateful, over real HTTP on a loopback port.

No kube-apiserver can run on this machine, so the Kubernetes client is tested against this. It
is faithful where the runtime depends on it, and says so where it is not:

- create (201; ``409 AlreadyExists``; ``404`` if the namespace does not exist), get, list and
  watch with ``labelSelector`` (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!key``) and
  ``fieldSelector`` (``metadata.name``, ``metadata.namespace``);
- replace (PUT) with a ``resourceVersion`` precondition (``409 Conflict``), merge patch and
  strategic merge patch of maps (a Service's selector), delete (``404 NotFound``);
- errors are ``Status`` objects (``application/json``, ``code``, ``reason``, ``details``) as in
  the API conventions;
- ``uid``, ``resourceVersion`` (one counter for all objects), ``generation`` (bumped when the
  spec changes, for kinds that have one), ``creationTimestamp`` are filled; an update that
  changes nothing is a no-op (no new resourceVersion, no event);
- watch from a ``resourceVersion`` replays what happened after it; one older than the last
  :meth:`compact` gets ``ERROR`` with a ``410 Expired`` Status on a 200 stream, as the real
  server does; an object entering or leaving a label selector is ``ADDED`` / ``DELETED``;
- immutable fields: a Deployment's ``spec.selector``, a Service's ``spec.clusterIP``, the data of
  an ``immutable`` ConfigMap (``422 Invalid``); the status of a Deployment changes only through
  its ``status`` subresource (or :meth:`set_status`).

It runs **no controllers**: a Deployment gets no ReplicaSet, no pods and no status unless a test
sets them (:meth:`set_status`, :meth:`create_object` for pods). It applies no defaults beyond the
above. Anything else the client might send — server-side apply, JSON patch, a strategic merge
patch of a list, ``limit``/``continue``, ``deletecollection``, ``generateName`` — is answered
``500`` with a message starting "not emulated", so that a test relying on it fails loudly instead
of passing against behaviour the real server does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from switchback.runtime.processes import free_port


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    has_generation: bool = False  # metadata.generation tracks spec changes
    has_status: bool = False  # status only through the status subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """As the API server names it in messages: ``deployments.apps``, ``configmaps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS = {
    k.plural: k
    for k in (
        Kind("", "v1", "namespaces", "Namespace", namespaced=False),
        Kind("", "v1", "configmaps", "ConfigMap"),
        Kind("", "v1", "secrets", "Secret"),
        Kind("", "v1", "services", "Service", has_status=True),
        Kind("", "v1", "pods", "Pod", has_status=True),
        Kind("", "v1", "serviceaccounts", "ServiceAccount"),
        Kind("apps", "v1", "deployments", "Deployment", has_generation=True, has_status=True),
        Kind("networking.k8s.io", "v1", "ingresses", "Ingress", has_generation=True,
             has_status=True),
    )
}  # fmt: skip


class ApiError(Exception):
    """An error answered as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_emulated(what: str) -> ApiError:
    return ApiError(500, "InternalError", f"not emulated by the test double: {what}")


def _details(kind: Kind, name: str, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name}
    if kind.group:
        d["group"] = kind.group
    d["kind"] = kind.plural
    d.update(kw)
    return d


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified} "{name}" not found', _details(kind, name))


def conflict(kind: Kind, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        _details(kind, name),
    )


def invalid(kind: Kind, name: str, field_path: str, why: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind.kind} "{name}" is invalid: {field_path}: {why}',
        _details(kind, name, causes=[{"reason": "FieldValueInvalid", "message": why,
                                      "field": field_path}]),
    )  # fmt: skip


# -- selectors ---------------------------------------------------------------------------------

_LABEL_TERM = re.compile(
    r"^\s*(?:(?P<neg>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$"
)


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t for t in terms if t.strip()]


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    if not selector:
        return lambda labels: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(selector):
        m = _LABEL_TERM.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term.strip()!r}")
        if m["neg"]:
            checks.append(lambda lb, k=m["nkey"]: k not in lb)
        elif m["op"]:
            k, v = m["key"], m["value"]
            if m["op"] == "!=":
                checks.append(lambda lb, k=k, v=v: lb.get(k) != v)
            else:
                checks.append(lambda lb, k=k, v=v: lb.get(k) == v)
        elif m["setop"]:
            values = {x.strip() for x in m["values"].split(",") if x.strip()}
            if m["setop"] == "in":
                checks.append(lambda lb, k=m["key"], vs=values: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=m["key"], vs=values: lb.get(k) not in vs)
        else:
            checks.append(lambda lb, k=m["key"]: k in lb)
    return lambda labels: all(c(labels) for c in checks)


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    if not selector:
        return lambda obj: True
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for term in _split_terms(selector):
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*([\w.-]*)\s*", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term.strip()!r}")
        path, op, value = m.groups()
        if path not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{path}"')
        key = path.split(".")[1]
        if op == "!=":
            checks.append(lambda o, k=key, v=value: o["metadata"].get(k) != v)
        else:
            checks.append(lambda o, k=key, v=value: o["metadata"].get(k) == v)
    return lambda obj: all(c(obj) for c in checks)


# -- patches -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 JSON merge patch; ``strategic``: the same for maps (the only part of a strategic
    merge patch that is emulated — lists and ``$patch`` directives are refused)."""
    if not isinstance(patch, dict):
        if strategic and isinstance(patch, list):
            raise not_emulated("strategic merge patch of a list")
        return copy.deepcopy(patch)
    if strategic and any(k.startswith("$") for k in patch):
        raise not_emulated("strategic merge patch directives ($patch, $retainKeys, ...)")
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v, strategic=strategic)
    return out


# -- the double --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    method: str
    verb: str  # the RBAC verb: get, list, watch, create, update, patch, delete
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None


@dataclass
class _Event:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    plural: str
    old: dict[str, Any] | None
    new: dict[str, Any]


Key = tuple[str, str, str]  # plural, namespace ("" for cluster-scoped), name


@dataclass
class KubeApiDouble:
    """Start with ``await double.start()`` (returns the URL), stop with ``await double.stop()``."""

    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    requests: list[RequestInfo] = field(default_factory=list)
    # Called (awaited) before each request is handled, with its RequestInfo: lets a test make a
    # concurrent change at an exact point (e.g. between a client's GET and its PUT).
    hooks: list[Callable[[RequestInfo], Awaitable[None]]] = field(default_factory=list)
    rv: int = 0
    compacted: int = 0
    history: list[_Event] = field(default_factory=list)  # append-only
    url: str = ""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _epoch: int = 0  # close_watches() bumps it: open watch streams end
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _ips: itertools.count[int] = field(default_factory=lambda: itertools.count(10))

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app(),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task  # raises the bind error
            await asyncio.sleep(0.005)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self.close_watches()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    # -- in-process API for tests (a controller's or an operator's hand) ----------------------

    def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def create_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = self._kind_of(obj)
        return await self._create(kind, obj["metadata"].get("namespace", ""), obj)

    async def set_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace an object's status (what the Deployment controller would do)."""
        return await self._write_status(KINDS[plural], namespace, name, status)

    async def modify(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Someone else changes the object (merge patch): a new resourceVersion."""
        return await self._patch(KINDS[plural], namespace, name, patch, strategic=False)

    async def delete_object(self, plural: str, namespace: str, name: str) -> None:
        """Someone else deletes the object."""
        await self._delete(KINDS[plural], namespace, name)

    async def compact(self) -> int:
        """Forget the history up to now (etcd compaction): a watch from an older
        resourceVersion gets 410 Expired."""
        self.compacted = self.rv  # the history is kept (open streams index it), not served
        return self.compacted

    async def close_watches(self) -> None:
        """End every open watch stream (the server's watch timeout)."""
        async with self._changed:
            self._epoch += 1
            self._changed.notify_all()

    def verbs_used(self) -> set[tuple[str, str, str]]:
        return {(r.group, r.resource, r.verb) for r in self.requests}

    # -- storage ----------------------------------------------------------------------------

    @staticmethod
    def _kind_of(obj: dict[str, Any]) -> Kind:
        for k in KINDS.values():
            if k.kind == obj.get("kind") and k.api_version == obj.get("apiVersion"):
                return k
        raise not_emulated(f"kind {obj.get('apiVersion')}/{obj.get('kind')}")

    def _key(self, kind: Kind, namespace: str, name: str) -> Key:
        return (kind.plural, namespace if kind.namespaced else "", name)

    def _stored(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get(self._key(kind, namespace, name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    async def _commit(
        self, kind: Kind, etype: str, old: dict[str, Any] | None, new: dict[str, Any]
    ) -> dict[str, Any]:
        async with self._changed:
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            key = self._key(kind, new["metadata"].get("namespace", ""), new["metadata"]["name"])
            if etype == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = new
            self.history.append(_Event(self.rv, etype, kind.plural, old, copy.deepcopy(new)))
            self._changed.notify_all()
        return copy.deepcopy(new)

    def _check_body(self, kind: Kind, body: Any, namespace: str) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body must be an object with metadata")
        if body.get("apiVersion") != kind.api_version or body.get("kind") != kind.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({kind.api_version}) or the kind ({body.get('kind')}) "
                f"is not {kind.kind}",
            )
        md = body["metadata"]
        if kind.namespaced and md.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        return body

    async def _create(self, kind: Kind, namespace: str, body: Any) -> dict[str, Any]:
        obj = copy.deepcopy(self._check_body(kind, body, namespace))
        md = obj["metadata"]
        if md.get("generateName") and not md.get("name"):
            raise not_emulated("generateName")
        name = md.get("name") or ""
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
            raise invalid(
                kind, name, "metadata.name", f"Invalid value: {name!r}: a DNS-1123 subdomain"
            )
        if kind.namespaced:
            if ("namespaces", "", namespace) not in self.objects:
                raise not_found(KINDS["namespaces"], namespace)
            md["namespace"] = namespace
        if self._key(kind, namespace, name) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind.qualified} "{name}" already exists',
                _details(kind, name),
            )
        md.pop("resourceVersion", None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if kind.has_generation:
            md["generation"] = 1
        if kind.has_status:
            obj["status"] = {}
        if kind.plural == "services":
            spec = obj.setdefault("spec", {})
            if not spec.get("clusterIP"):
                n = next(self._ips)
                spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        if kind.plural == "pods":
            obj["status"] = body.get("status") or {}  # pods have no controller here: as given
        return await self._commit(kind, "ADDED", None, obj)

    def _next(self, kind: Kind, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """The invariants of an update: identity kept, immutable fields checked, status kept
        (main resource), generation bumped on a spec change."""
        name = old["metadata"]["name"]
        md = new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "namespace", "name"):
            if k in old["metadata"]:
                md[k] = old["metadata"][k]
        md.pop("resourceVersion", None)
        if kind.has_status:
            new["status"] = copy.deepcopy(old.get("status", {}))
        if kind.plural == "deployments":
            if new.get("spec", {}).get("selector") != old.get("spec", {}).get("selector"):
                raise invalid(kind, name, "spec.selector", "field is immutable")
        if kind.plural == "services":
            spec = new.setdefault("spec", {})
            old_ip = old.get("spec", {}).get("clusterIP")
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_ip
                spec["clusterIPs"] = [old_ip]
            elif spec["clusterIP"] != old_ip:
                raise invalid(kind, name, "spec.clusterIP", "field is immutable")
        if kind.plural == "configmaps" and old.get("immutable"):
            for f in ("data", "binaryData", "immutable"):
                if new.get(f) != old.get(f):
                    raise invalid(kind, name, f, "field is immutable when `immutable` is set")
        if kind.has_generation:
            gen = old["metadata"].get("generation", 1)
            md["generation"] = gen + 1 if new.get("spec") != old.get("spec") else gen
        return new

    def _unchanged(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items()  # noqa: E731
                                            if k != "resourceVersion"}}  # fmt: skip
        return strip(old) == strip(new)

    async def _replace(self, kind: Kind, namespace: str, name: str, body: Any) -> dict[str, Any]:
        body = self._check_body(kind, body, namespace)
        if body["metadata"].get("name") != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({body['metadata'].get('name')}) does not match the "
                f"name on the URL ({name})",
            )
        old = self._stored(kind, namespace, name)
        rv = body["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        new = self._next(kind, old, copy.deepcopy(body))
        if self._unchanged(old, new):
            return copy.deepcopy(old)
        return await self._commit(kind, "MODIFIED", copy.deepcopy(old), new)

    async def _patch(
        self, kind: Kind, namespace: str, name: str, patch: Any, *, strategic: bool
    ) -> dict[str, Any]:
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        old = self._stored(kind, namespace, name)
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        new = self._next(kind, old, merge_patch(old, patch, strategic=strategic))
        if self._unchanged(old, new):
            return copy.deepcopy(old)
        return await self._commit(kind, "MODIFIED", copy.deepcopy(old), new)

    async def _write_status(
        self, kind: Kind, namespace: str, name: str, status: Any
    ) -> dict[str, Any]:
        old = self._stored(kind, namespace, name)
        new = copy.deepcopy(old)
        new["status"] = copy.deepcopy(status)
        if self._unchanged(old, new):
            return copy.deepcopy(old)
        return await self._commit(kind, "MODIFIED", copy.deepcopy(old), new)

    async def _delete(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        old = self._stored(kind, namespace, name)
        if kind.plural == "namespaces":
            for key in [k for k in self.objects if k[1] == name]:
                await self._delete(KINDS[key[0]], name, key[2])
        await self._commit(kind, "DELETED", copy.deepcopy(old), copy.deepcopy(old))
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": _details(kind, name, uid=old["metadata"]["uid"]),
        }

    # -- HTTP -------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._handle,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )

    @staticmethod
    def _parse(path: str) -> tuple[Kind, str, str | None, str | None]:
        """kind, namespace, name, subresource of an API path."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, rest = parts[1], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in KINDS:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in KINDS or KINDS[rest[0]].group != group or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kind = KINDS[rest[0]]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status") or (sub == "status" and not kind.has_status):
            raise not_emulated(f"subresource {sub}")
        return kind, namespace, name, sub

    async def _handle(self, request: Request) -> Response:
        try:
            kind, namespace, name, sub = self._parse(request.url.path)
            q = request.query_params
            watch = q.get("watch") in ("true", "1")
            verb = {
                "GET": "get" if name else ("watch" if watch else "list"),
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection",
            }[request.method]
            info = RequestInfo(
                request.method,
                verb,
                kind.group,
                kind.plural + (f"/{sub}" if sub else ""),
                namespace or None,
                name,
            )
            self.requests.append(info)
            for hook in list(self.hooks):
                await hook(info)
            for param in ("limit", "continue", "sendInitialEvents", "resourceVersionMatch"):
                if q.get(param):
                    raise not_emulated(f"the {param} parameter")
            if q.get("dryRun"):
                raise not_emulated("dryRun")
            return await self._dispatch(request, kind, namespace, name, sub, verb)
        except ApiError as exc:
            return JSONResponse(exc.status(), exc.code)

    async def _body(self, request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from None

    async def _dispatch(
        self, request: Request, kind: Kind, ns: str, name: str | None, sub: str | None, verb: str
    ) -> Response:
        if verb == "get":
            return JSONResponse(self._with_type(kind, self._stored(kind, ns, name or "")))
        if verb == "list":
            return JSONResponse(self._list(kind, ns, request))
        if verb == "watch":
            return self._watch(kind, ns, request)
        if verb == "create":
            return JSONResponse(
                self._with_type(kind, await self._create(kind, ns, await self._body(request))),
                201,
            )
        assert name is not None or verb == "deletecollection"
        if verb == "update":
            body = await self._body(request)
            if sub == "status":
                self._check_body(kind, body, ns)
                stored = self._stored(kind, ns, name or "")
                rv = body["metadata"].get("resourceVersion")
                if rv and rv != stored["metadata"]["resourceVersion"]:
                    raise conflict(kind, name or "")
                obj = await self._write_status(kind, ns, name or "", body.get("status", {}))
            else:
                obj = await self._replace(kind, ns, name or "", body)
            return JSONResponse(self._with_type(kind, obj))
        if verb == "patch":
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            if ctype == "application/apply-patch+yaml":
                raise not_emulated("server-side apply")
            if ctype == "application/json-patch+json":
                raise not_emulated("JSON patch")
            if ctype not in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ):
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ctype!r}")  # fmt: skip
            patch = await self._body(request)
            strategic = ctype == "application/strategic-merge-patch+json"
            if sub == "status":
                stored = self._stored(kind, ns, name or "")
                status = merge_patch(stored.get("status", {}), patch.get("status", {}),
                                     strategic=strategic)  # fmt: skip
                obj = await self._write_status(kind, ns, name or "", status)
            else:
                obj = await self._patch(kind, ns, name or "", patch, strategic=strategic)
            return JSONResponse(self._with_type(kind, obj))
        if verb == "delete":
            return JSONResponse(await self._delete(kind, ns, name or ""))
        raise not_emulated(verb)

    @staticmethod
    def _with_type(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": kind.api_version, "kind": kind.kind,
                **{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}}  # fmt: skip

    def _selected(self, kind: Kind, ns: str, request: Request) -> Callable[[dict[str, Any]], bool]:
        labels = label_matcher(request.query_params.get("labelSelector"))
        fields = field_matcher(request.query_params.get("fieldSelector"))

        def match(obj: dict[str, Any]) -> bool:
            md = obj["metadata"]
            if kind.namespaced and ns and md.get("namespace") != ns:
                return False
            return labels(md.get("labels") or {}) and fields(obj)

        return match

    def _list(self, kind: Kind, ns: str, request: Request) -> dict[str, Any]:
        match = self._selected(kind, ns, request)
        items = [
            copy.deepcopy(o)
            for (plural, _, _), o in sorted(self.objects.items())
            if plural == kind.plural and match(o)
        ]
        # Items of a list carry no apiVersion/kind: the list's own say what they are.
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    def _watch(self, kind: Kind, ns: str, request: Request) -> Response:
        match = self._selected(kind, ns, request)
        since = request.query_params.get("resourceVersion") or "0"
        timeout = float(request.query_params.get("timeoutSeconds") or 1800)
        if not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}")
        start = int(since)

        def line(etype: str, obj: dict[str, Any]) -> bytes:
            return (json.dumps({"type": etype, "object": obj}) + "\n").encode()

        async def stream() -> AsyncIterator[bytes]:
            epoch = self._epoch
            if start == 0:  # "any": the current state as ADDED, then changes
                pos = len(self.history)
                now = [
                    self._with_type(kind, o)
                    for (plural, _, _), o in sorted(self.objects.items())
                    if plural == kind.plural and match(o)
                ]
                for o in now:
                    yield line("ADDED", o)
            elif start < self.compacted:
                gone = ApiError(
                    410, "Expired", f"too old resource version: {start} ({self.compacted})"
                )
                yield line("ERROR", gone.status())
                return
            else:
                pos = next(
                    (i for i, e in enumerate(self.history) if e.rv > start), len(self.history)
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                while pos < len(self.history):
                    e = self.history[pos]
                    pos += 1
                    if e.plural != kind.plural:
                        continue
                    was = e.old is not None and e.type != "ADDED" and match(e.old)
                    now = e.type != "DELETED" and match(e.new)
                    if e.type == "DELETED":
                        etype = "DELETED" if match(e.new) else None
                    elif was and now:
                        etype = "MODIFIED"
                    elif now:
                        etype = "ADDED"
                    elif was:
                        etype = "DELETED"
                    else:
                        etype = None
                    if etype:
                        yield line(etype, self._with_type(kind, e.new))
                if self._epoch != epoch:
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                async with self._changed:
                    if pos >= len(self.history) and self._epoch == epoch:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._changed.wait(), remaining)

        return StreamingResponse(stream(), media_type="application/json")

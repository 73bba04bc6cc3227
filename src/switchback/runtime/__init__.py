"""Where versions of an app run. ``local``: processes and Envoy sidecars on loopback, shaped like
Kubernetes (deployments, services with selectors, an ingress)."""

from switchback.runtime.local import Instance, LocalRuntime, RuntimeError_

__all__ = ["Instance", "LocalRuntime", "RuntimeError_"]

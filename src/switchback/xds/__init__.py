"""Our xDS control plane for Envoy sidecars, service proxies and the ingress.

See docs/xds.md. The API the rest of switchback uses is `ControlPlane` (control.py).
"""

from switchback.xds.control import AckReport, ControlPlane
from switchback.xds.resources import NodeSpec

__all__ = ["AckReport", "ControlPlane", "NodeSpec"]

"""switchback on Kubernetes: the deck's layout as manifests (``manifests``), the controller's own
install (``install``), a Dockerfile for an app build (``dockerfile``) and the async API calls
the Kubernetes runtime makes (``client``). See docs/kubernetes.md."""

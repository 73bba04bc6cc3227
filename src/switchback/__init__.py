"""switchback: durable DO/UNDO transactions for service-orchestration APIs."""

__version__ = "0.1.0"

"""The blue/green release as a scenario of DO/UNDO blocks, run by the controller's engine."""

from switchback.release.scenario import RELEASE, RELEASE_WITH_APPROVAL, release_app

__all__ = ["RELEASE", "RELEASE_WITH_APPROVAL", "release_app"]

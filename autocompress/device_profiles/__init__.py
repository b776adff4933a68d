"""Device profiles: one data file per target, every number with its source."""
from .profile import DeviceProfile, ProfileError, detect_host, known_targets, load_profile, resolve_target

__all__ = ["DeviceProfile", "ProfileError", "detect_host", "known_targets", "load_profile",
           "resolve_target"]

"""sotopia-social: the env under the id third-party frameworks load it by.

- verifiers: `vf.load_environment("sotopia-social", partner=..., reward=...)` imports this module and calls
  `load_environment` (trainers/verifiers_env.py; `pip install "sotopia-env[verifiers]"`).
- OpenEnv: this folder is the environment's OpenEnv project (openenv.yaml, pyproject.toml, uv.lock, server/app.py),
  and `sotopia_social.client` holds the typed client that OpenEnv's discovery names (`SotopiaSocialEnv`,
  `SotopiaSocialAction`, `SotopiaSocialObservation`; trainers/openenv_env.py; `pip install "sotopia-env[openenv]"`).

Nothing of either framework is imported until one of these names is used.
"""

from __future__ import annotations

from typing import Any

_CLIENT_NAMES = ("SotopiaSocialEnv", "SotopiaSocialAction", "SotopiaSocialObservation", "SotopiaSocialState")


def load_environment(**kwargs: Any) -> Any:
    """verifiers' entry point: a `vf.MultiTurnEnv` of the env (see `trainers.verifiers_env.load_environment`)."""
    from trainers.verifiers_env import load_environment as load

    return load(**kwargs)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'sotopia_social' has no attribute {name!r}")


__all__ = ["load_environment", *_CLIENT_NAMES]

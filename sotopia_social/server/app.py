"""The OpenEnv server of the sotopia_social environment, as OpenEnv's tools run it (`uv run --project . server`,
`python -m sotopia_social.server.app`, the Docker image of `openenv build`). It is `sotopia-env serve-env`: the
settings (trainers.interop.ServeEnvConfig's fields) come from SOTOPIA_<FIELD> environment variables, e.g.
SOTOPIA_PARTNER=embedded SOTOPIA_REWARD=runs/rm/best SOTOPIA_MAX_CONCURRENT_ENVS=64."""

from __future__ import annotations

import os
from dataclasses import fields

from trainers.interop import ServeEnvConfig
from trainers.openenv_env import make_app


def config_from_environ(environ: dict[str, str] | None = None) -> ServeEnvConfig:
    environ = dict(os.environ if environ is None else environ)
    values = {}
    for f in fields(ServeEnvConfig):
        raw = environ.get(f"SOTOPIA_{f.name.upper()}")
        if raw is not None:
            kind = type(f.default) if f.default is not None else str
            values[f.name] = kind(raw) if kind in (int, float) else raw
    cfg = ServeEnvConfig(**values)
    cfg.validate()
    return cfg


def main(host: str = "0.0.0.0", port: int = 8000) -> None:
    """`server`, the project's script: the app on host:port (SOTOPIA_PORT, when set, wins over the default)."""
    import uvicorn

    cfg = config_from_environ()
    uvicorn.run(make_app(cfg), host=host, port=int(os.environ.get("SOTOPIA_PORT", port)))


def __getattr__(name: str):  # noqa: ANN202 - `server.app:app` for uvicorn, built on first use
    if name == "app":
        global app
        app = make_app(config_from_environ())
        return app
    raise AttributeError(name)


if __name__ == "__main__":
    main()

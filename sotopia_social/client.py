"""The OpenEnv client and models of the sotopia_social environment, where OpenEnv's discovery looks for them
(`<module>.client`, classes named after the environment). They live in trainers/openenv_env.py."""

from trainers.openenv_env import SotopiaSocialAction, SotopiaSocialEnv, SotopiaSocialObservation, SotopiaSocialState

__all__ = ["SotopiaSocialAction", "SotopiaSocialEnv", "SotopiaSocialObservation", "SotopiaSocialState"]

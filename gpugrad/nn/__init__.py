"""``gpugrad.nn``: neural-network building blocks with torch.nn's names: ``Module`` and
``Parameter``, the layers and losses (``modules/``), ``functional`` and ``init``."""
from . import functional, init  # noqa: F401
from .module import Module  # noqa: F401
from .modules import *  # noqa: F401,F403
from .parameter import Parameter  # noqa: F401
from . import utils  # noqa: F401,E402 - after Module/Parameter: utils builds on them

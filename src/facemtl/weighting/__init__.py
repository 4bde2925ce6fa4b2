"""Loss weightings, pluggable by name through :data:`WEIGHTINGS`."""

from .base import WEIGHTINGS, Weighting, build_weighting
from .dwa import DWA
from .gradnorm import GradNorm
from .learned import LearnedWeights
from .simple import Equal, Fixed
from .uncertainty import Uncertainty

__all__ = ["WEIGHTINGS", "Weighting", "build_weighting", "Equal", "Fixed", "Uncertainty", "LearnedWeights", "DWA", "GradNorm"]

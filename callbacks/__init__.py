"""Lightning callbacks for metta_lightning, one concern per callback."""

from callbacks.gradients import GradientStats
from callbacks.monitor import SystemMonitor
from callbacks.profiler import TorchProfiler
from callbacks.progress import RLProgress

__all__ = ["GradientStats", "RLProgress", "SystemMonitor", "TorchProfiler"]

"""Lightning callbacks for metta_lightning, one concern per callback."""

from callbacks.checkpoint import PolicyCheckpoint
from callbacks.evaluate import EvaluateCallback
from callbacks.gradients import GradientStats
from callbacks.logger_run_id import LoggerRunId
from callbacks.monitor import SystemMonitor
from callbacks.profiler import TorchProfiler
from callbacks.progress import RLProgress
from callbacks.upload import UploadCallback

__all__ = ["EvaluateCallback", "GradientStats", "LoggerRunId", "PolicyCheckpoint", "UploadCallback", "RLProgress", "SystemMonitor", "TorchProfiler"]

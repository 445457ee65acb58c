"""System monitor (monitor/* metrics, leak detector) and gradient statistics under manual optimization."""

import contextlib
import math
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.gradients import GradientStats, gradient_stats
from callbacks.monitor import SystemMonitor, linear_fit


class RecordingLogger(Logger):
    def __init__(self):
        super().__init__()
        self.rows = []

    @property
    def name(self):
        return "rec"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def keys(self):
        return set().union(*(m for _, m in self.rows)) if self.rows else set()


class TinyRL(L.LightningModule):
    def __init__(self, updates_per_batch: int = 3):
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.updates_per_batch = updates_per_batch
        self.grad_norms = []

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=8)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt = self.optimizers()
        for _ in range(self.updates_per_batch):
            loss = self.net(x).pow(2).mean()
            opt.zero_grad()
            self.manual_backward(loss)
            self.grad_norms.append(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in self.parameters()])).item())
            opt.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callbacks, model=None, epochs=2, log_every=1):
    rec = RecordingLogger()
    model = model or TinyRL()
    L.Trainer(max_epochs=epochs, logger=rec, callbacks=callbacks, accelerator="cpu", enable_progress_bar=False,
              enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=log_every).fit(model)
    return rec, model


def test_monitor_metrics_present_and_plausible():
    mon = SystemMonitor(interval_s=0.0)
    rec, _ = _fit([mon])
    assert len(rec.rows) == 4  # one sample per batch end (2 batches x 2 epochs), one row per step
    m = mon.last_metrics
    for key in ("monitor/cpu_percent", "monitor/system_cpu_percent", "monitor/rss_mb", "monitor/available_mb",
                "monitor/system_memory_percent", "monitor/num_threads", "monitor/rss_slope_mb_per_min"):
        assert key in m and key in rec.keys(), key
        assert math.isfinite(m[key])
    assert 20 < m["monitor/rss_mb"] < 64_000  # torch is loaded: tens of MB at least
    assert m["monitor/available_mb"] > 0
    assert 0 <= m["monitor/system_cpu_percent"] <= 100 and 0 <= m["monitor/system_memory_percent"] <= 100
    assert m["monitor/cpu_percent"] >= 0 and m["monitor/num_threads"] >= 1
    if torch.cuda.is_available():
        assert "monitor/gpu0/mem_allocated_mb" in m
    assert all(k.startswith("monitor/") or k == "epoch" for k in rec.keys())


def test_monitor_samples_only_on_logging_steps():
    mon = SystemMonitor(interval_s=0.0)
    rec, _ = _fit([mon], epochs=3, log_every=4)  # 6 batches: Lightning writes logs after batches 4 (and at stop)
    assert 1 <= len(rec.rows) <= 2 and all("monitor/rss_mb" in m for _, m in rec.rows)


def test_monitor_samples_first_batch_then_respects_interval():
    # A run shorter than interval_s still gets one sample: at the first batch, not interval_s after the start.
    mon = SystemMonitor(interval_s=3600.0)
    taken = []
    sample = mon.sample
    mon.sample = lambda: taken.append(sample()) or taken[-1]
    rec, _ = _fit([mon])  # 4 batches
    assert len(taken) == 1
    assert rec.rows and rec.rows[0][0] == 0 and rec.rows[0][1]["monitor/rss_mb"] == taken[0]["monitor/rss_mb"]


class _FakeProc:
    def __init__(self, rss_mb):
        self.rss_mb = rss_mb

    def oneshot(self):
        return contextlib.nullcontext()

    def memory_info(self):
        return type("M", (), {"rss": int(next(self.rss_mb) * 1024 * 1024)})()

    def cpu_percent(self, interval=None):
        return 1.0

    def num_threads(self):
        return 1


def test_leak_detector_warns_on_steady_growth_only(monkeypatch):
    clock = iter(range(0, 10_000, 60))  # one sample per minute
    monkeypatch.setattr("callbacks.monitor.time.monotonic", lambda: float(next(clock)))
    grow = SystemMonitor(leak_window=10, leak_mb_per_min=5.0)
    grow._proc = _FakeProc(iter(1000.0 + 20.0 * i for i in range(100)))  # +20 MB/min
    with pytest.warns(UserWarning, match="possible memory leak"):
        for _ in range(10):
            grow.sample()
    assert grow.leak_warnings == 1 and grow.last_metrics["monitor/rss_slope_mb_per_min"] == pytest.approx(20.0)

    flat = SystemMonitor(leak_window=10, leak_mb_per_min=5.0)
    flat._proc = _FakeProc(iter(1000.0 + (30.0 if i % 2 else 0.0) for i in range(100)))  # noisy, no trend
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(30):
            flat.sample()
    assert flat.leak_warnings == 0


def test_linear_fit():
    slope, r2 = linear_fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert slope == pytest.approx(2.0) and r2 == pytest.approx(1.0)
    assert linear_fit([1.0], [2.0]) == (0.0, 0.0)


def test_gradient_stats_fire_under_manual_optimization():
    grads = GradientStats(every_n_updates=2)
    rec, model = _fit([grads], TinyRL(updates_per_batch=3))
    total_updates = 2 * 2 * 3  # epochs x batches x updates
    assert grads.updates == total_updates
    logged = [m for _, m in rec.rows]
    # The logged norms are those of the gradients opt.step() applied; updates 0, 2, 4, 6, 8, 10 are sampled,
    # each written once at the logging step of its training batch (3 updates per batch).
    assert [s for s, _ in rec.rows] == [0, 0, 1, 2, 2, 3]
    assert [m["grad/global_norm"] for m in logged] == pytest.approx(
        [model.grad_norms[i] for i in (0, 2, 4, 6, 8, 10)], rel=1e-5)
    last = logged[-1]
    per_layer = [last[f"grad/{n}/norm"] for n, _ in model.named_parameters()]
    assert math.sqrt(sum(v * v for v in per_layer)) == pytest.approx(last["grad/global_norm"], rel=1e-5)
    for n, _ in model.named_parameters():
        assert f"grad/{n}/mean" in last and last[f"grad/{n}/var"] >= 0
    assert grads.state_dict() == {"updates": total_updates}


def test_gradient_stats_function_without_grads():
    assert gradient_stats(nn.Linear(2, 2)) == {}
    m = nn.Linear(3, 1)
    m(torch.ones(2, 3)).sum().backward()
    s = gradient_stats(m, per_layer=False)
    assert set(s) == {"grad/global_norm"} and s["grad/global_norm"] > 0

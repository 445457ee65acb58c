"""RLProgress: plain periodic lines when not interactive, rich bar when interactive, numbers from the module."""

import time

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.progress import RLProgress, human


class TinyRL(L.LightningModule):
    def __init__(self, with_counter=True):
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Linear(4, 2)
        if with_counter:
            self.agent_steps = 0

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(40, 4)), batch_size=8)  # 5 batches per epoch

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt = self.optimizers()
        loss = self.net(x).pow(2).mean()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        time.sleep(0.01)
        if hasattr(self, "agent_steps"):
            self.agent_steps += 100
        self.log_dict({"overview/reward": 0.25, "env_agent/heart.gained": 1.5}, on_step=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(progress, model, epochs=2, max_steps=-1):
    L.Trainer(max_epochs=epochs, max_steps=max_steps, logger=False, callbacks=[progress], accelerator="cpu",
              enable_checkpointing=False, enable_model_summary=False).fit(model)


def test_noninteractive_lines(capsys):
    progress = RLProgress(interactive=False, log_every_s=0.0)
    _fit(progress, TinyRL())
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[progress]")]
    assert len(lines) == 10 + 1  # one per batch (log_every_s=0) + the final line
    assert lines[0].startswith("[progress] 100/1.0k agent steps (10.0%) | ")
    last = lines[-1]
    assert "1.0k/1.0k agent steps (100.0%)" in last and last.endswith("(done)")
    for part in ("SPS", "reward 0.250", "hearts 1.50", "elapsed", "ETA 0:00:00"):
        assert part in last, part
    st = progress.last_status
    assert st["steps"] == 1000 and st["total"] == 1000 and st["sps"] > 0


def test_noninteractive_is_quiet_between_intervals(capsys):
    progress = RLProgress(interactive=False, log_every_s=3600.0)
    _fit(progress, TinyRL())
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[progress]")]
    assert len(lines) == 1 and lines[0].endswith("(done)")


def test_fallback_to_updates_and_max_steps_eta(capsys):
    progress = RLProgress(interactive=False, log_every_s=0.0)
    _fit(progress, TinyRL(with_counter=False), epochs=10, max_steps=6)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[progress]")]
    assert lines[0].startswith("[progress] 1/6 updates")
    assert progress.last_status["unit"] == "updates" and progress.last_status["eta"] is not None


def test_interactive_rich_bar(capsys):
    progress = RLProgress(interactive=True)
    _fit(progress, TinyRL(), epochs=1)
    assert progress._progress is None  # stopped at train end
    assert progress.last_status["steps"] == 500


def test_human():
    assert human(999) == "999" and human(1500) == "1.5k" and human(2_340_000) == "2.34M" and human(3e9) == "3.00B"


def test_eta_follows_max_time_when_it_ends_the_run_first():
    # 100k epochs would take far longer than the 1-hour max_time: ETA is the time left, not the epochs' ETA.
    class StopAfter(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            trainer.should_stop = trainer.global_step >= 3

    seen = []

    class Spy(L.Callback):  # after RLProgress in the list, so it sees this batch's status
        def on_train_batch_end(self, trainer, *args):
            seen.append(dict(progress.last_status))

    progress = RLProgress(interactive=False, log_every_s=1e9)
    L.Trainer(max_epochs=100_000, max_time="00:01:00:00", logger=False, callbacks=[progress, Spy(), StopAfter()],
              accelerator="cpu", enable_checkpointing=False, enable_model_summary=False).fit(TinyRL(with_counter=False))
    st = seen[-1]
    assert st["eta"] is not None and 3500 < st["eta"] + st["elapsed"] <= 3601
    assert st["total"] == st["steps"] + st["sps"] * st["eta"]
    assert st["total"] < 5 * 100_000  # not the epochs-based total (5 batches per epoch)

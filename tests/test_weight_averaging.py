"""Lightning's EMAWeightAveraging on the seed's network, named on the command line as the README says: the
checkpoint's weights are the average (what test.py, predict.py, export.py and serve.py read), and a killed run
resumed with --ckpt_path last ends on the same average and the same trained weights as an uninterrupted one."""

import torch

from conftest import fit_in_subprocess, whole_and_killed_runs

# 50 training images in batches of 8: 7 steps per epoch; a checkpoint every 3 steps. A decay of 0.8 makes the
# average differ from the weights within these few steps.
RUN = ["--data.val_size", "10", "--data.batch_size", "8", "--max_epochs", "3", "--checkpoint.every_n_train_steps", "3",
       "--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay", "0.8"]


def last_checkpoint(cwd, version: int) -> dict:
    return torch.load(cwd / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt", weights_only=True)


def test_the_checkpoint_holds_the_average_and_a_resume_continues_it(learnable_data_dir, tmp_path):
    # SIGKILLed in epoch 1, two steps after the checkpoint at step 9.
    whole_and_killed_runs(learnable_data_dir, tmp_path, RUN, kill_at_step=11)
    # The run's command typed again: its callback, already in the run's saved settings, is not added twice.
    resumed = fit_in_subprocess(learnable_data_dir, tmp_path / "crash", *RUN, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing in lightning_logs/version_0" in resumed.stderr

    expected, got = last_checkpoint(tmp_path / "whole", 0), last_checkpoint(tmp_path / "crash", 0)
    assert (got["epoch"], got["global_step"]) == (expected["epoch"], expected["global_step"]) == (2, 21)
    for name, weight in expected["current_model_state"].items():
        assert not torch.equal(expected["state_dict"][name], weight), f"{name}: the average is the trained weight"
    # A resume that started the average afresh from the restored weights would end elsewhere.
    for part in ("state_dict", "current_model_state"):
        for name, tensor in expected[part].items():
            assert torch.equal(got[part][name], tensor), f"{part}: {name}"  # bit for bit, on the CPU

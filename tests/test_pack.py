"""Packs: several seeds of one config trained as one batched model are those runs, each member
its own; the study runner packs where it may and the runs resume member by member."""

import dataclasses

import pytest
import torch

from mnist_lab import runner
from mnist_lab.cli import main
from mnist_lab.config import RunContext, TrainConfig
from mnist_lab.models import create_model, list_models
from mnist_lab.packing import (
    member_opt_state,
    member_state,
    pack_model,
    packed_opt_state,
    packed_state,
    unpackable,
)
from mnist_lab.record import StudyLabel
from mnist_lab.snapshot import load_snapshot
from mnist_lab.store import Store
from mnist_lab.train import SNAPSHOT_FORMAT, train
from mnist_lab.train_pack import pack_problem, train_pack

# The models that cannot be packed (each test below says why); every other model must pack, so a
# new model that packs needs no edit here.
UNPACKABLE = {"cnn_aug", "compact_step2", "fcnn", "pytorch_example", "strided_cnn"}
# depthwise convolutions: pack only on a GPU (slower packed on CPU)
GROUPED = {"sep_1k", "sep_2k", "sep_4k", "shared_1k", "shared_1k_deep"}


def _seeds(cfg: TrainConfig, seeds=(0, 1, 2)) -> list[TrainConfig]:
    return [dataclasses.replace(cfg, seed=s) for s in seeds]


@pytest.mark.parametrize("name", list_models("torch"))
def test_every_model_packs_or_says_why(name):
    problem = pack_problem(_seeds(TrainConfig(model=name, device="cpu")))
    assert (problem is None) == (name not in UNPACKABLE | GROUPED), problem
    if name in GROUPED:
        assert "depthwise" in problem
        assert unpackable(lambda: create_model(name), 3) is None  # still packs right, on a GPU
    if name == "compact_step2":
        assert "dropout" in problem
    if name == "cnn_aug":  # log-softmax over dim 1: found by running the pack, not by type
        assert "mixes channels" in problem


def test_runs_that_differ_beyond_the_seed_do_not_pack():
    base = TrainConfig(model="softmax")
    assert "more than the seed" in pack_problem([base, dataclasses.replace(base, lr=0.2)])
    assert "alone" in pack_problem(_seeds(TrainConfig(model="logreg")))
    assert "alone" in pack_problem(_seeds(dataclasses.replace(base, adversarial="fgsm")))
    assert "--ema runs train alone" in pack_problem(_seeds(dataclasses.replace(base, ema=0.9)))
    assert "two runs" in pack_problem([base])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_states_split_and_join_again(optimizer):
    from mnist_lab.optim import make_optimizer

    members = [create_model("compact_step3") for _ in range(3)]
    pack = pack_model(members)
    opt = make_optimizer(TrainConfig(optimizer=optimizer), pack)
    pack(torch.randn(8, 3, 28, 28)).square().sum().backward()
    opt.step()
    states = [member_state(pack, m, k, 3) for k, m in enumerate(members)]
    assert all(states[k][n].shape == v.shape for k in range(3)
               for n, v in members[k].state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(packed_state(pack, states).values(),
                                                  pack.state_dict().values(), strict=True))
    likes = list(members[0].parameters())
    opts = [member_opt_state(opt.state_dict(), likes, k, 3) for k in range(3)]
    again = packed_opt_state(opts, list(pack.parameters()))
    flat = [t for t in _tensors(again)]
    assert flat and all(torch.equal(a, b) for a, b in zip(flat, _tensors(opt.state_dict()),
                                                          strict=True))


def _tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    items = state.values() if isinstance(state, dict) else state if isinstance(state, list) else []
    return [t for v in items for t in _tensors(v)]


def _history(outcome) -> list[float]:
    """Every epoch's losses, accuracies and weight norm, in one list."""
    return [x for e in outcome.history for x in (e.train_loss, e.train_accuracy, e.val_loss,
                                                 e.test_loss, e.test_accuracy, e.weight_norm)
            if x is not None]


def test_a_member_is_the_run_trained_alone(mnist):
    """An MLP pack, 2 epochs with hold-out, rotation and L2: each member's whole history is
    its run's, to float rounding."""
    cfg = TrainConfig(model="mlp", epochs=2, subset=1000, val_size=500, test_subset=1000,
                      l2=1e-4, batch_size=50, threads=1)
    for packed, cfg_k in zip(train_pack(_seeds(cfg), mnist), _seeds(cfg), strict=True):
        alone = train(cfg_k, mnist)
        assert packed.status == alone.status == "complete" and packed.timing.packed == 3
        assert _history(packed) == pytest.approx(_history(alone), rel=1e-5, abs=1e-6)
        assert packed.params == alone.params
        # a member's throughput counts its own images (as alone) over the pack's training time
        seen = [o.timing.train_images_per_s * sum(e.seconds for e in o.history)
                for o in (packed, alone)]
        assert seen[0] == pytest.approx(seen[1]) == 2 * 1000


def test_a_conv_member_agrees_to_rounding_over_its_first_steps(mnist):
    """Batch-norm nets amplify rounding (a run on 2 threads parts from itself on 1 after a few
    steps, as much as a member from its run), so conv packs are compared over 3 steps."""
    cfg = TrainConfig(model="compact_step3", epochs=1, subset=192, batch_size=64,
                      test_subset=1000, threads=1)
    for packed, cfg_k in zip(train_pack(_seeds(cfg), mnist), _seeds(cfg), strict=True):
        assert _history(packed) == pytest.approx(_history(train(cfg_k, mnist)), rel=1e-4)


def test_a_killed_pack_resumes_from_its_members_snapshots(mnist, tmp_path, monkeypatch):
    import mnist_lab.train_pack as tp

    cfgs = _seeds(TrainConfig(model="softmax", epochs=3, subset=1000, test_subset=500,
                              threads=1), (0, 1))
    paths = [tmp_path / f"{c.key()}.pt" for c in cfgs]
    whole = train_pack(cfgs, mnist)
    real, saved = tp.save_snapshot, []

    def kill_after_epoch_1(path, state):
        real(path, state)
        saved.append(path)
        if len(saved) == len(cfgs):
            raise KeyboardInterrupt

    monkeypatch.setattr(tp, "save_snapshot", kill_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train_pack(cfgs, mnist, snapshots=paths)
    monkeypatch.setattr(tp, "save_snapshot", real)
    # a member's snapshot is the single run's: the run alone goes on from it
    assert len(load_snapshot(paths[1], cfgs[1].key(), SNAPSHOT_FORMAT)["history"]) == 1
    resumed = train_pack(cfgs, mnist, snapshots=paths)
    for a, b in zip(resumed, whole, strict=True):
        assert a.timing.resumed_at_epoch == 1
        assert _history(a) == _history(b)  # the same process, the same arithmetic: exact
    alone = train(cfgs[1], mnist, snapshot=paths[1])
    assert alone.timing.resumed_at_epoch == 2 and len(alone.history) == 3


STUDY = """
name = "packs"
seeds = [0, 1, 2]
[base]
epochs = 1
subset = 600
test_subset = 500
[[blocks]]
name = "models"
table = ["test_accuracy"]
[[blocks.variants]]
name = "mlp"
model = "mlp"
[[blocks.variants]]
name = "dropout"
model = "compact_step2"
"""


@pytest.mark.parametrize("flags", [[], ["--no-pack"]])
def test_study_run_packs_a_variants_seeds_by_default(flags, tmp_path, data_root):
    (tmp_path / "packs.toml").write_text(STUDY)
    assert main(["study", "run", str(tmp_path / "packs.toml"), "--runs-dir",
                 str(tmp_path / "runs"), "--data-dir", str(data_root), *flags]) == 0
    store, pack = Store(tmp_path / "runs"), not flags
    assert len(store.runs(study="packs", status="complete")) == 6
    packed = {r.label.variant: r.timing.packed for r in store.runs(study="packs")}
    assert packed == ({"mlp": 3, "dropout": None} if pack else {"mlp": None, "dropout": None})
    assert all(r.checkpoint and store.outputs(r.id) is not None for r in store.runs(study="packs"))


def test_packs_queue_before_single_runs_of_less_work():
    # seed-major, as the runner's pending list comes: the dropout net cannot pack, the MLP can;
    # its pack (three runs' work) must not wait behind the three single runs
    tasks = [(TrainConfig(model=model, seed=seed), RunContext(), StudyLabel("s", "b", model, seed))
             for seed in (0, 1, 2) for model in ("compact_step2", "mlp")]
    order = runner.packed(tasks, snapshots=False)
    assert [len(t[0]) if isinstance(t[0], list) else 1 for t in order] == [3, 1, 1, 1]
    assert [t[0].seed for t in order[1:]] == [0, 1, 2]

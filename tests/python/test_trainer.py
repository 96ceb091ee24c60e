"""The Python face of the trainer: convnet.train / Trainer with callbacks, stop and resume,
checkpoints (round trip, model mismatch), divergence, evaluation (single and 10-view), top-k."""

import json
import os

import numpy as np
import pytest

import convnet
from convnet import data, zoo
from convnet.train import Callback, DataPrep, Trainer, evaluate, evaluate_multiview

DATA = "generated[count=384;classes=4;channels=1;size=16;seed=3]"


def small(classes=4, size=16):
    return zoo.small_convnet(classes=classes, channels=1, size=size, lr=0.02)


class Recorder(Callback):
    def __init__(self, stop_at_batch=None):
        self.batches, self.tests, self.epochs = [], [], []
        self.stop_at_batch = stop_at_batch

    def on_batch(self, e):
        self.batches.append(e)
        return self.stop_at_batch is None or len(self.batches) < self.stop_at_batch

    def on_test(self, e):
        self.tests.append(e)

    def on_epoch(self, e):
        self.epochs.append(e)


def test_train_learns_writes_log_and_checkpoints(tmp_path):
    rec = Recorder()
    net, result = convnet.train(small(), DATA, epochs=3, batch=32, save_dir=str(tmp_path), keep=2,
                                callbacks=[rec], progress=False, schedule="exp[tgtFactor=10]")
    assert result["epochs_done"] == 3 and result["step"] == 36 and not result["stopped"]
    assert result["test"]["top1_error"] < 0.3, result  # 4 classes: chance is 0.75
    assert len(rec.batches) == 36 and len(rec.epochs) == 3 and len(rec.tests) == 3
    assert rec.batches[0]["lr"] == pytest.approx(0.02)
    assert rec.batches[-1]["lr"] == pytest.approx(0.02 * 10 ** (-(2 + 11 / 12) / 3), rel=1e-5)
    assert len(convnet._core.list_checkpoints(str(tmp_path))) == 2
    lines = [json.loads(l) for l in open(tmp_path / "log.jsonl")]
    assert [l["event"] for l in lines].count("batch") == 36
    assert lines[-1]["event"] == "epoch" and lines[-1]["test_top1_error"] == result["test"]["top1_error"]


def test_stop_and_resume_gives_the_uninterrupted_weights(tmp_path):
    whole, _ = convnet.train(small(), DATA, epochs=2, batch=32, progress=False)
    rec = Recorder(stop_at_batch=17)  # stop in epoch 2
    _, stopped = convnet.train(small(), DATA, epochs=2, batch=32, save_dir=str(tmp_path),
                               callbacks=[rec], progress=False)
    assert stopped["stopped"] and stopped["step"] == 17
    # A resume keeps the run's seed: asking for another is refused, not half obeyed.
    with pytest.raises(ValueError, match="--seed 77 differs from the seed 1 of the run"):
        convnet.train(small(), DATA, epochs=2, batch=32, save_dir=str(tmp_path), resume=True, progress=False,
                      seed=77)
    resumed, result = convnet.train(small(), DATA, epochs=2, batch=32, save_dir=str(tmp_path),
                                    resume=True, progress=False)
    assert result["step"] == 24
    for name in whole.param_names():
        assert np.array_equal(whole.get_param(name), resumed.get_param(name)), name


def test_checkpoint_round_trip_and_model_mismatch(tmp_path, problem, rng):
    net = convnet.Net(small(classes=10))
    x, y = problem.batch(16, rng)
    net.train_step(x, y)
    path = str(tmp_path / "a.safetensors")
    net.save_checkpoint(path, {"note": "hello"})
    again = convnet.Net.from_checkpoint(path)
    assert again.checkpoint_state == {"note": "hello"} and again.step == 1
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    other = convnet.Net(zoo.small_convnet(classes=5, channels=1, size=16))
    with pytest.raises(ValueError, match="fc3"):
        other.load_checkpoint(path)


def test_checkpoint_reads_with_the_safetensors_package(tmp_path, problem, rng):
    """A checkpoint is a standard safetensors file: the reference reader (safetensors, the
    Hugging Face package) gets every parameter and its momentum, and the metadata."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    net = convnet.Net(small(classes=10))
    x, y = problem.batch(16, rng)
    net.train_step(x, y)
    net.train_step(x, y)
    path = str(tmp_path / "a.safetensors")
    net.save_checkpoint(path, {"note": "hello"})
    tensors = load_file(path)
    names = net.param_names()
    assert set(tensors) == set(names) | {f"{n}.velocity" for n in names}
    for n in names:
        np.testing.assert_array_equal(tensors[n].reshape(net.get_param(n).shape), net.get_param(n))
        np.testing.assert_array_equal(tensors[f"{n}.velocity"].reshape(net.get_param(n).shape),
                                      net._net.get_velocity(n))
        assert tensors[n].dtype == np.float32
    with safe_open(path, "numpy") as f:
        meta = f.metadata()
    assert json.loads(meta["convnet.model"])["layers"][0]["name"] == "data", meta.keys()
    assert json.loads(meta["convnet.state"]) == {"note": "hello"}


def test_resume_with_a_changed_schedule_says_so(tmp_path, capsys):
    convnet.train(small(), DATA, epochs=1, batch=32, save_dir=str(tmp_path), progress=False,
                  schedule="plateau[patience=1;threshold=0.5]")
    capsys.readouterr()
    convnet.train(small(), DATA, epochs=2, batch=32, save_dir=str(tmp_path), progress=False,
                  resume=True, schedule="plateau[patience=4]")
    err = capsys.readouterr().err
    assert "resume: schedule of group '*' changed from plateau[factor=0.1;maxDrops=3;patience=1;threshold=0.5" in err, err
    assert "the plateau's record carries over" in err, err


def test_divergence_raises_floating_point_error(tmp_path):
    with pytest.raises(FloatingPointError, match="exceeds the limit"):
        convnet.train(small(), DATA, epochs=1, batch=32, max_grad_norm=1e-9, progress=False)
    assert issubclass(convnet.DivergenceError, FloatingPointError)


def test_bad_schedule_is_reported_before_training():
    prep = DataPrep(DATA)
    net = convnet.Net(small())
    train, test = prep.pipelines(32)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosine'"):
        Trainer(net, train, test, schedule={"conv": "cosine", "*": "constant"})
    with pytest.raises(ValueError, match="group 'conv9' matches no layer"):
        Trainer(net, train, test, schedule={"conv9": "constant"})


def test_evaluate_single_and_ten_views():
    prep = DataPrep(DATA, crop=14, mirror=True)  # the 10 views include reflections: train on them
    net, _ = convnet.train(zoo.small_convnet(classes=4, channels=1, size=14, lr=0.02), prep, epochs=3,
                           batch=32, progress=False)
    _, test = prep.pipelines(32)
    single = evaluate(net, test)
    ten = evaluate_multiview(net, prep.test_source, crop=14, mean_value=prep.mean_value, scale=prep.scale)
    assert single["examples"] == ten["examples"] == 96
    assert ten["top1_error"] < 0.3 and single["top1_error"] < 0.3, (single, ten)
    assert ten["top5_error"] == 0.0  # 4 classes


def test_top_k_is_sorted_with_names(problem, rng):
    net = convnet.Net(zoo.small_convnet(classes=10, channels=1, size=16))
    x, _ = problem.batch(3, rng)
    names = [f"class{i}" for i in range(10)]
    top = net.top_k(x, k=5, class_names=names)
    probs = net.predict(x)
    assert len(top) == 3 and all(len(t) == 5 for t in top)
    for row, p in zip(top, probs):
        ps = [q for _, q in row]
        assert ps == sorted(ps, reverse=True)
        assert row[0] == (names[int(np.argmax(p))], pytest.approx(float(p.max())))


def test_data_sets_by_name_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        DataPrep(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="neither IDX files"):
        DataPrep(str(tmp_path))
    with pytest.raises(ValueError, match="unknown key 'colours'"):
        DataPrep("generated[colours=3]")


# ---- solvers ----

def test_solver_options_are_validated_before_training():
    with pytest.raises(ValueError, match=r"unknown solver 'adam' \(known: sgd, nesterov, adamw\)"):
        convnet.train(small(), DATA, epochs=1, batch=32, progress=False, solver="adam")
    with pytest.raises(ValueError, match=r"beta2 must be in \[0, 1\)"):
        convnet.train(small(), DATA, epochs=1, batch=32, progress=False, solver="adamw",
                      adam_betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="apply to solver 'adamw' only, not 'nesterov'"):
        convnet.train(small(), DATA, epochs=1, batch=32, progress=False, solver="nesterov",
                      adam_eps=1e-6)
    # The defaults come from the engine.
    o = convnet._core.SolverOptions()
    assert (o.name, o.beta1, o.beta2, o.eps) == ("sgd", 0.9, 0.999, 1e-8)


@pytest.mark.parametrize("solver", ["nesterov", "adamw"])
def test_each_solver_resumes_bit_exactly_and_saves_its_state(tmp_path, solver):
    model = small() if solver != "adamw" else zoo.small_convnet(classes=4, channels=1, size=16, lr=0.002)
    kw = dict(epochs=2, batch=32, progress=False, solver=solver)
    whole, result = convnet.train(model, DATA, **kw)
    assert result["train"]["top1_error"] < 0.5, result  # it learns (chance is 0.75)
    _, stopped = convnet.train(model, DATA, save_dir=str(tmp_path), callbacks=[Recorder(stop_at_batch=17)], **kw)
    assert stopped["stopped"]
    resumed, _ = convnet.train(model, DATA, save_dir=str(tmp_path), resume=True, **kw)
    states = ["m", "v"] if solver == "adamw" else ["velocity"]
    for name in whole.param_names():
        assert np.array_equal(whole.get_param(name), resumed.get_param(name)), name
        for s in states:
            assert np.array_equal(whole.get_solver_state(name, s), resumed.get_solver_state(name, s)), (name, s)
    assert resumed.solver["name"] == solver and resumed.solver["step"] == 24

    path = convnet._core.latest_checkpoint(str(tmp_path))
    from safetensors import safe_open
    with safe_open(path, "numpy") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert json.loads(meta["convnet.solver"])["name"] == solver
    assert json.loads(meta["convnet.state"])["run"]["solver"]["name"] == solver
    assert keys == set(whole.param_names()) | {f"{n}.{s}" for n in whole.param_names() for s in states}
    # Net.from_checkpoint takes the file's solver; a resume with another is refused, naming both.
    assert convnet.Net.from_checkpoint(path).solver["name"] == solver
    with pytest.raises(ValueError, match=f"saved by solver '{solver}', but this net's solver is 'sgd'"):
        convnet.train(model, DATA, save_dir=str(tmp_path), resume=True, **dict(kw, solver="sgd"))


def test_gradient_buckets_hold_the_gradients(problem, rng):
    net = convnet.Net(small(classes=10))
    x, y = problem.batch(16, rng)
    net.forward_backward(x, y)
    buckets = net.gradient_buckets()
    assert len(buckets) == 1 and buckets[0]["device"] == "cpu:0"
    b = buckets[0]
    assert sorted(b["params"]) == sorted(net.param_names())
    for name, offset in zip(b["params"], b["offsets"]):
        g = net.get_grad(name)
        np.testing.assert_array_equal(b["flat"][offset:offset + g.size], g.ravel())


def test_trainer_keeps_the_nets_solver_unless_told():
    prep = DataPrep(DATA)
    net = convnet.Net(small())
    net.set_solver("adamw", adam_betas=(0.8, 0.99))
    train, test = prep.pipelines(32)
    Trainer(net, train, test, epochs=1, progress=False)
    assert net.solver["name"] == "adamw" and net.solver["beta1"] == 0.8
    Trainer(net, train, test, epochs=1, progress=False, solver="nesterov")
    assert net.solver["name"] == "nesterov"

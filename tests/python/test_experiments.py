"""`convnet experiment`: the list, an unknown name, a tiny run writing results/table/plot, resume
after an interruption (only the missing runs execute), a changed setup refused, and the
fashion_alexnet ablation switches the experiments use. Tiny generated data, 1 epoch: seconds."""

import json
import os

import pytest

from convnet import cli, experiments, zoo

DATA = "generated[count=256;classes=4;channels=1;size=28;seed=5]"
TINY = dict(data=DATA, epochs=1, train_subset=128, test_subset=64)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_list_names_every_experiment_with_its_question(capsys):
    assert cli.main(["experiment", "--list"]) == 0
    out = capsys.readouterr().out
    for name, exp in experiments.EXPERIMENTS.items():
        assert any(line.startswith(name) and exp.question in line for line in out.splitlines()), out
    assert {"neurons", "lrn-pooling", "dropout"} <= set(experiments.EXPERIMENTS)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["experiment", "nuerons", "--out", str(tmp_path)])
    text = str(e.value)
    assert "unknown experiment 'nuerons'" in text and all(n in text for n in experiments.EXPERIMENTS), text
    assert not os.listdir(tmp_path)  # nothing ran
    with pytest.raises(ValueError, match="known experiments: neurons"):
        experiments.run_experiment("nope", str(tmp_path))


@pytest.mark.parametrize("option", ["seeds", "epochs", "train_subset", "test_subset"])
def test_a_budget_of_zero_is_an_error_naming_it(tmp_path, option):
    with pytest.raises(ValueError, match=f"{option} must be >= 1, got 0"):
        experiments.run_experiment("dropout", str(tmp_path), out=None, **dict(TINY, **{"seeds": 1, option: 0}))


def test_a_subset_larger_than_the_data_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="training subset 1000 is larger than the training set"):
        experiments.run_experiment("dropout", str(tmp_path), out=None, **dict(TINY, seeds=1, train_subset=1000))


def test_tiny_run_writes_results_table_and_plot(tmp_path, capsys):
    out = str(tmp_path / "neurons")
    rc = cli.main(["experiment", "neurons", "--out", out, "--data", DATA, "--epochs", "1", "--seeds", "2",
                   "--train-subset", "128", "--test-subset", "64"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "run 1/8: relu, seed 1" in printed and "run 8/8: softsign, seed 2" in printed, printed
    rs = records(out)
    arms = ["relu", "tanh", "logistic", "softsign"]
    assert sorted((r["arm"], r["seed"]) for r in rs) == sorted((a, s) for a in arms for s in (1, 2))
    for r in rs:
        assert 0 <= r["test_error"] <= 1 and 0 <= r["train_error"] <= 1 and r["seconds"] > 0, r
        assert len(r["curve"]) == 1 and r["curve"][0]["epoch"] == 1, r
        assert r["test_error"] == r["curve"][-1]["test_error"]
        assert "epochs_to_target" in r and r["target_train_error"] == 0.15
    table = open(os.path.join(out, "table.md")).read()
    assert experiments.EXPERIMENTS["neurons"].claim in table
    for a in arms:
        row = next(line for line in table.splitlines() if line.startswith(f"| {a} |"))
        assert row.startswith(f"| {a} | 2 |") and "±" in row, row
    with open(os.path.join(out, "plot.png"), "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


def test_interrupted_experiment_resumes_with_only_the_missing_runs(tmp_path):
    out = str(tmp_path / "dropout")

    def interrupt(record):
        raise KeyboardInterrupt  # as a Ctrl-C right after the first run was recorded

    with pytest.raises(KeyboardInterrupt):
        experiments.run_experiment("dropout", out, seeds=2, on_run=interrupt, out=None, **TINY)
    first = records(out)
    assert [(r["arm"], r["seed"]) for r in first] == [("dropout-0.5", 1)]

    result = experiments.run_experiment("dropout", out, seeds=2, out=None, **TINY)
    assert [(r["arm"], r["seed"]) for r in result["ran"]] == [("no-dropout", 1), ("dropout-0.5", 2),
                                                              ("no-dropout", 2)]
    rs = records(out)
    assert len(rs) == 4 and rs[0] == first[0]  # the finished run was kept, not redone
    # Nothing missing: a third call runs nothing; more seeds add only theirs.
    assert experiments.run_experiment("dropout", out, seeds=2, out=None, **TINY)["ran"] == []
    more = experiments.run_experiment("dropout", out, seeds=3, out=None, **TINY)
    assert sorted((r["arm"], r["seed"]) for r in more["ran"]) == [("dropout-0.5", 3), ("no-dropout", 3)]


def test_torn_last_line_is_redone(tmp_path):
    out = str(tmp_path / "x")
    experiments.run_experiment("dropout", out, seeds=1, out=None, **TINY)
    with open(os.path.join(out, "results.jsonl")) as f:
        lines = f.readlines()
    with open(os.path.join(out, "results.jsonl"), "w") as f:  # killed while writing the last line
        f.write(lines[0] + lines[1][:20])
    ran = experiments.run_experiment("dropout", out, seeds=1, out=None, **TINY)["ran"]
    assert [(r["arm"], r["seed"]) for r in ran] == [("no-dropout", 1)]


def test_changed_budget_is_refused_unless_restart(tmp_path, capsys):
    out = str(tmp_path / "d")
    experiments.run_experiment("dropout", out, seeds=1, out=None, **TINY)
    changed = dict(TINY, epochs=2)
    with pytest.raises(ValueError, match=r"another setup \(budget changed.*'epochs': 1.*'epochs': 2.*--restart"):
        experiments.run_experiment("dropout", out, seeds=1, out=None, **changed)
    assert len(records(out)) == 2  # the old results are untouched
    rc = cli.main(["experiment", "dropout", "--out", out, "--data", DATA, "--epochs", "2", "--seeds", "1",
                   "--train-subset", "128", "--test-subset", "64"])
    assert rc == 2 and "--restart" in capsys.readouterr().err
    experiments.run_experiment("dropout", out, seeds=1, restart=True, out=None, **changed)
    rs = records(out)
    assert len(rs) == 2 and all(len(r["curve"]) == 2 for r in rs)


def test_time_to_target_interpolates_between_epoch_ends():
    curve = [dict(epoch=1, train_error=0.5, seconds=10.0), dict(epoch=2, train_error=0.3, seconds=20.0),
             dict(epoch=3, train_error=0.1, seconds=30.0)]
    assert experiments._to_target(curve, 0.2) == pytest.approx((2.5, 25.0))
    assert experiments._to_target(curve, 0.6) == (1.0, 10.0)
    assert experiments._to_target(curve, 0.05) == (None, None)
    assert experiments.summarise([0.1, None, 0.3]) == "0.2000 ± 0.1414 (2/3 reached)"
    assert experiments.summarise([None, None]) == "not reached (0/2)"


def layer_types(model):
    return [layer["type"] for layer in json.loads(model.to_json())["layers"]]


def test_fashion_alexnet_ablation_switches():
    base = json.loads(zoo.fashion_alexnet().to_json())["layers"]
    assert "lrn" in layer_types(zoo.fashion_alexnet()) and "lrn" not in layer_types(zoo.fashion_alexnet(lrn=False))
    assert "dropout" not in layer_types(zoo.fashion_alexnet(dropout=0))
    pools = [l for l in json.loads(zoo.fashion_alexnet(pool_size=2, pool_stride=2).to_json())["layers"]
             if l["type"] == "pool"]
    assert pools and all(l["size"] == 2 and l["stride"] == 2 for l in pools)
    tanh = json.loads(zoo.fashion_alexnet(neuron="tanh").to_json())["layers"]
    assert [l.get("neuron") for l in tanh if l.get("neuron")] == \
        ["tanh" if l.get("neuron") == "relu" else l.get("neuron") for l in base if l.get("neuron")]
    with pytest.raises(ValueError, match="dropout must be in"):
        zoo.fashion_alexnet(dropout=1.0)


NEW = ["filter-stacks", "one-by-one", "biases-init", "schedules", "augmentation", "local-vs-conv"]


@pytest.mark.parametrize("name", NEW)
def test_each_experiment_runs_and_tabulates_every_arm(tmp_path, name):
    out = str(tmp_path / name)
    result = experiments.run_experiment(name, out, seeds=1, out=None, **TINY)
    exp = experiments.EXPERIMENTS[name]
    arms = exp.arms(4, 1, 28)
    assert sorted(r["arm"] for r in records(out)) == sorted(arms)
    table = open(result["table"]).read()
    for arm in arms:
        row = next(line for line in table.splitlines() if line.startswith(f"| {arm} |"))
        assert row.count("|") == len(exp.metrics) + 3, row
    for r in records(out):
        assert all(m in r for m in exp.metrics), (r.keys(), exp.metrics)


def test_filter_stacks_count_what_vgg_counts():
    arms = experiments.EXPERIMENTS["filter-stacks"].arms(10, 1, 28)
    c = 32  # block 2: C channels in and out; a k x k conv has k^2 C^2 weights and C biases
    expect = {"one 5x5": (1, 5), "two 3x3": (2, 3), "one 7x7": (1, 7), "three 3x3": (3, 3)}
    for name, (convs, k) in expect.items():
        facts = arms[name].facts
        weights = convs * k * k * c * c
        assert facts["block_params"] == weights + convs * c, (name, facts)
        assert facts["block_rf"] == 1 + convs * (k - 1), (name, facts)  # 5 = 5, 7 = 7: the same view
        assert facts["block_macs"] == 14 * 14 * weights, (name, facts)  # on the 14x14 map after pool 1
    assert arms["three 3x3"].facts["block_params"] < 0.6 * arms["one 7x7"].facts["block_params"]


def test_one_by_one_and_local_arms():
    b = experiments.EXPERIMENTS["one-by-one"].arms(10, 1, 28)
    # C adds a 1x1 conv of 64 -> 64 (4,160 parameters) to B; D a 3x3 conv (36,928)
    assert b["C: two 3x3 + 1x1"].facts["block_params"] - b["B: two 3x3"].facts["block_params"] == 64 * 64 + 64
    assert b["D: three 3x3"].facts["block_params"] - b["B: two 3x3"].facts["block_params"] == 9 * 64 * 64 + 64
    t = experiments.EXPERIMENTS["local-vs-conv"].arms(10, 1, 28)
    conv, local = t["conv 3x3"].facts, t["local 3x3"].facts
    # the same products at each of the 5x5 positions; the local layer has a filter bank (and biases) per position
    assert conv["block_macs"] == local["block_macs"] == 5 * 5 * 32 * 64 * 9
    assert conv["block_params"] == 32 * 64 * 9 + 32 and local["block_params"] == 25 * (32 * 64 * 9 + 32)
    types = {a: [l["type"] for l in json.loads(arm.model.to_json())["layers"] if l["name"] == "top"] for a, arm in t.items()}
    assert types == {"conv 3x3": ["conv"], "local 3x3": ["local"]}


def test_biases_and_init_arms():
    arms = experiments.EXPERIMENTS["biases-init"].arms(10, 1, 28)
    for name, arm in arms.items():
        layers = {l["name"]: l for l in json.loads(arm.model.to_json())["layers"]}
        want_bias = 1.0 if "biases 1" in name else 0.0
        assert [layers[n]["initB"] for n in ("conv2a", "conv2b", "fc4a", "fc4b")] == [want_bias] * 4, name
        assert layers["conv1a"].get("initB", 0) == 0
        gaussian = name.startswith("N(0,0.01)")
        assert layers["conv2a"]["init"] == ("gaussian" if gaussian else "kaiming") and layers["conv2a"]["initW"] == 0.01
        # the paper's init reads the paper's pixels (0-255 levels); kaiming unit-variance ones
        assert arm.train.get("scale") == arm.test.get("scale") == (1.0 if gaussian else None)


def test_steps_to_learn_is_the_first_window_below_the_threshold():
    chance = __import__("math").log(10)
    flat = [chance] * 30
    assert experiments._steps_to_learn(flat, 10) is None
    falling = [chance] * 20 + [0.4 * chance] * 20  # the window mean is below 0.9 chance after 2 low steps
    assert experiments._steps_to_learn(falling, 10) == 22
    assert experiments._steps_to_learn([0.1] * 9, 10) is None  # never a whole window


def test_schedule_arms_change_the_rate_and_augmentation_arms_reach_the_pipeline(tmp_path):
    result = experiments.run_experiment("schedules", str(tmp_path / "s"), seeds=1, out=None, **dict(TINY, epochs=3))
    lrs = {r["arm"]: [p["lr"] for p in r["curve"]] for r in result["records"]}
    assert lrs["constant"] == pytest.approx([0.01] * 3)
    dexp = lrs["dexp (to 1/100)"]
    assert dexp == sorted(dexp, reverse=True) and dexp[-1] < 0.01 / 10, lrs  # steps down to 1/100
    assert all(lr <= 0.01 * (1 + 1e-6) for lr in lrs["plateau (/10)"]), lrs
    aug = experiments.EXPERIMENTS["augmentation"].arms(10, 1, 28)
    assert aug["crops 24 + reflections"].train == dict(crop=24, mirror=True)
    assert json.loads(aug["crops 24 + reflections"].model.to_json())["layers"][0]["size"] == 24
    assert aug["scale jitter 28-32 + reflections"].train["scale_jitter"] == (28, 32)
    assert not any("PCA" in a for a in aug)  # grey data: no colour noise arm
    colour = experiments.EXPERIMENTS["augmentation"].arms(10, 3, 28)
    assert colour["reflections + PCA colour noise"].train == dict(mirror=True, pca_std=0.1)


def test_colour_data_gets_the_pca_noise_arm(tmp_path):
    colour = dict(TINY, data="generated[count=256;classes=4;channels=3;size=28;seed=5]")
    result = experiments.run_experiment("augmentation", str(tmp_path / "c"), seeds=1, out=None, **colour)
    assert "reflections + PCA colour noise" in {r["arm"] for r in result["records"]}


def test_no_augmentation_unless_the_arm_asks():
    from convnet.train import DataPrep
    prep = DataPrep(DATA)
    arms = experiments.EXPERIMENTS["augmentation"].arms(4, 1, 28)
    src = experiments._subset_source(prep.train_source, 128, 4, "training")

    def first_batch(arm, train):
        pipe = experiments._pipelines(arms[arm], src, src, prep, 64, seed=1)[0 if train else 1]
        return next(iter(pipe.epoch())).images()

    plain = first_batch("none", True)
    flipped = first_batch("reflections", True)
    from convnet.data import Pipeline
    raw = next(iter(Pipeline(src, 64, seed=1, train=True, shuffle=True, mirror=False,
                             mean_value=prep.mean_value, scale=prep.scale).epoch())).images()
    assert (plain == raw).all()
    assert not (flipped == plain).all()
    # each reflected image is the plain one or its mirror image
    assert all((f == p).all() or (f == p[..., ::-1]).all() for f, p in zip(flipped, plain))

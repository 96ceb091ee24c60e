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

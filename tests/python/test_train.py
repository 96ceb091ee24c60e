"""A small net trained for a few hundred SGD steps on a generated problem must learn it."""

import numpy as np

import convnet


def test_small_convnet_learns_generated_problem(problem, rng):
    net = convnet.Net(convnet.zoo.small_convnet(classes=10, channels=1, size=16), seed=3)
    test_x, test_y = problem.batch(1000, np.random.default_rng(99))
    first = None
    for step in range(300):
        x, y = problem.batch(32, rng)
        stats = net.train_step(x, y)["costs"][0]
        first = first if first is not None else stats["cost"]
    pred = net.predict(test_x)
    accuracy = float((pred.argmax(1) == test_y).mean())
    print(f"first batch cost {first:.3f}, held-out accuracy {accuracy:.3f}")
    # Chance is 0.10; seen: about 0.98 after 300 steps.
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f} < 0.95 after 300 steps"
    # The cost reported by forward agrees with the probabilities predict returns.
    stats = net.forward(test_x[:64], test_y[:64], train=False)["costs"][0]
    p = net.output("cost").reshape(64, -1)
    manual = -np.log(p[np.arange(64), test_y[:64]]).mean()
    assert abs(stats["cost"] - manual) < 1e-4
    assert abs(stats["top1_error"] - (p.argmax(1) != test_y[:64]).mean()) < 1e-9


def test_training_is_deterministic_for_a_seed(problem):
    def run():
        net = convnet.Net(convnet.zoo.small_convnet(classes=10, size=16), seed=5)
        r = np.random.default_rng(0)
        for _ in range(5):
            net.train_step(*problem.batch(16, r))
        return net.get_param("conv1.weights")

    np.testing.assert_array_equal(run(), run())

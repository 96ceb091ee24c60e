"""Writes the shipped model definitions (configs/*.json) from convnet.zoo, so that the C++ tools
and tests read exactly what the Python zoo defines. Run after changing the zoo:
    PYTHONPATH=python python3 scripts/export_configs.py"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))

from convnet import zoo  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "configs"
MODELS = {
    "alexnet_2012.json": zoo.alexnet_2012(),
    "alexnet_one_tower.json": zoo.alexnet_one_tower(),
    "small_convnet.json": zoo.small_convnet(),
    "fashion_alexnet.json": zoo.fashion_alexnet(),
    **{f"vgg_{c.lower()}.json": zoo.vgg(c) for c in "ABCDE"},
}

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, model in MODELS.items():
        (OUT / name).write_text(model.to_json() + "\n")
        print("wrote", OUT / name)

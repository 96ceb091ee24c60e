"""Two checkpoints hold the same tensors, equal within `rtol` of each tensor's largest value
(data parallelism sums in another order than one process): the shell tests' check.
    compare_checkpoints.py ONE.safetensors TWO.safetensors [RTOL]"""
import array
import json
import struct
import sys


def tensors(path: str) -> dict:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for k, v in header.items():
        if k != "__metadata__":
            a = array.array("f")
            a.frombytes(body[v["data_offsets"][0]:v["data_offsets"][1]])
            out[k] = a
    return out


def main() -> int:
    one, two = tensors(sys.argv[1]), tensors(sys.argv[2])
    rtol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    assert one.keys() == two.keys(), (sorted(one), sorted(two))
    for k in one:
        scale = max(abs(x) for x in one[k])
        diff = max(abs(a - b) for a, b in zip(one[k], two[k]))
        print(f"{k}: max |difference| {diff:.3g} (largest value {scale:.3g})")
        assert diff <= rtol * scale, k
    return 0


if __name__ == "__main__":
    sys.exit(main())
